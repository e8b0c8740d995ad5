"""The gateway's Socket.IO endpoint (docs/ws-protocol.md, "Socket.IO")."""
