"""`cove serve`: the Docker Engine API (v1.41) over a unix socket, a thin layer over the
engine (cove/engine/*), so the docker CLI, docker-compose and docker-py drive Cove.

    server.py      HTTP/1.1 on asyncio streams (h11), routing, errors, streams, hijack
    app.py         the router with every endpoint; `serve(root, socket_path)`
    containers.py  create/start/stop/.../logs/stats (translate.py: docker's JSON shapes)
    hijack.py      attach and exec (the upgraded connection)
    archive.py     `docker cp` (GET/PUT/HEAD archive)
    images.py, networks.py, volumes.py, system.py
"""
