# syntax=docker/dockerfile:1
# The berth operator image: the `berth` binary on distroless, running as 65532 (nonroot).
#
#   docker build -t ghcr.io/berth-dev/berth:0.1.0 .
#
# Rebuilds are incremental: BuildKit cache mounts keep the cargo registry and the target directory from one
# build to the next, so a source change recompiles berth's own crates, not its dependencies. .dockerignore
# keeps target/, .cluster/ and .git/ out of the build context.

# ---------------------------------------------------------------------------------------------- build
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the versions in Cargo.lock. The target directory is a cache mount (not part of the
# image), so the binary is copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p berth-operator --locked \
    && install -D -m 0755 target/release/berth /out/berth

# ---------------------------------------------------------------------------------------------- runtime
# glibc, libgcc, CA certificates and nothing else: no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/berth /berth
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/berth"]
