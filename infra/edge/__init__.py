"""The CDN edge: CloudFront signed cookies (cloudfront.py) and the local edge that checks them (server.py)."""
