"""gRPC face-swap service (no TensorFlow): see docs/serving.md.

registry  the models under --models, by folder name (their contract: faces/model_folder.py)
session   onnxruntime sessions with honest provider selection, shared with the exporter
batcher   one onnxruntime call for the faces of many frames and streams
tracking  Haar detection with tracking and box smoothing, per stream
pipeline  the per-frame stages and the overlapped, ordered stream pipeline (no gRPC)
metrics   Prometheus metrics (serve --metrics-port)
service   FaceSwap servicer, status codes, token auth, health, reflection, run_server / SwapServer
cli       `swapstream serve`

The frame codec and metadata keys shared with the client are in faces/wire.py, imported first
here: it sets OpenCV's own pixel limit, which OpenCV reads only once, when cv2 is first imported.
"""
import swapstream.faces.wire  # noqa: F401  (before anything imports cv2)
