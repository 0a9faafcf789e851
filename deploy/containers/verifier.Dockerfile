# The verifier on a CUDA runtime image. Copies the self-contained publish tools/package.sh makes
# (artifacts/publish/cloud-linux-x64). ONNX Runtime 1.31's CUDA provider wants CUDA 12 or 13 with cuDNN 9.
# Not built or run here: no base image can be pulled on the development machine.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
WORKDIR /app
COPY artifacts/publish/cloud-linux-x64/ /app/
ENV SPECEDGE_CACHE=/models/.cache
EXPOSE 50051
ENTRYPOINT ["/app/specedge-cloud", "--urls", "http://0.0.0.0:50051", "--allow-plaintext", "--device", "cuda", "--compute", "f16"]
CMD ["--model", "/models/target"]
