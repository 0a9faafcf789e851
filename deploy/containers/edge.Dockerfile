# The edge (generate, or serve: the OpenAI API) for linux-x64 or linux-arm64 (a Jetson). Copies the self-contained
# publish tools/package.sh makes (artifacts/publish/edge-linux-ARCH):
#   docker build --platform linux/arm64 --build-arg ARCH=arm64 -f deploy/containers/edge.Dockerfile .
# Not built or run here: no base image can be pulled on the development machine.
FROM mcr.microsoft.com/dotnet/runtime-deps:10.0
ARG ARCH=x64
WORKDIR /app
COPY artifacts/publish/edge-linux-${ARCH}/ /app/
EXPOSE 8080
ENTRYPOINT ["/app/specedge-edge"]
CMD ["serve", "--listen", "http://0.0.0.0:8080", "--server", "http://verifier:50051", "--draft", "/models/draft"]
