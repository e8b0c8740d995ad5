"""One APIRouter per area of the ingest API; producers/app.py includes them."""
