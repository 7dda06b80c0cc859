# bgrun's container image: Debian bookworm-slim, the libraries bgrun links,
# pg_dump (postgresql-client), the binary and the playbooks, run as the
# non-root user bgrun (uid 10001) from /opt/bgrun:
#
#   docker build -t bgrun .
#   docker run --rm -e KUBECONFIG=/kube/config -v ~/.kube/config:/kube/config:ro bgrun \
#     playbooks/deploy.lua env=prod tag=v1.2.3 --yes --log-format json
#
# (the mounted kubeconfig must be readable by uid 10001)
#
# The runtime stage is the filesystem deploy/image/build-rootfs.sh builds
# from Debian packages alone: both read deploy/image/packages.txt, run
# deploy/image/setup.sh and lay the files out with deploy/image/stage.sh.
# `make test` builds that root filesystem and runs a backup inside it.

# ---- build: compile bgrun with the -dev packages -------------------------
FROM debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive
COPY deploy/image/build-packages.txt /tmp/build-packages.txt
RUN apt-get update \
 && sed 's/#.*//' /tmp/build-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN make -j"$(nproc)" all \
 && deploy/image/stage.sh /src /stage

# ---- runtime: the libraries, pg_dump, the binary, the playbooks ----------
FROM debian:bookworm-slim
ENV DEBIAN_FRONTEND=noninteractive
COPY deploy/image/packages.txt deploy/image/setup.sh /tmp/image/
RUN apt-get update \
 && sed 's/#.*//' /tmp/image/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* \
 && sh /tmp/image/setup.sh \
 && rm -rf /tmp/image
COPY --from=build /stage/ /
ENV HOME=/home/bgrun
USER 10001:10001
WORKDIR /opt/bgrun
ENTRYPOINT ["bgrun"]
CMD ["--help"]
