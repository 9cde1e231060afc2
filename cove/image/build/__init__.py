"""`cove build`: images from a Containerfile/Dockerfile (docs/build.md).

parser (the language), ignore (.dockerignore), context (the files a build sees),
plan (stages and which a target needs), steps (config-only instructions), copying
(COPY/ADD), runner (a step's container through cove-runtime, its change as a layer),
cache (steps reused), builder (all of it in order, the image stored last),
dockerapi (docker's POST /build query and progress stream).
"""
