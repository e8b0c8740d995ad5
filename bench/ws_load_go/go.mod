module lustrax/bench/ws_load_go

go 1.24

require github.com/gorilla/websocket v1.5.3
