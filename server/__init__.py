"""gRPC face-swap service (no TensorFlow): see docs/serving.md.

manifest  model folder contract (model.onnx + manifest.json), shared with the exporter
session   onnxruntime sessions with honest provider selection, shared with the exporter
registry  the models under --models, by folder name
batcher   one onnxruntime call for the faces of many frames and streams
tracking  Haar detection with tracking and box smoothing, per stream
codec     frame bytes <-> images
pipeline  the per-frame stages and the overlapped, ordered stream pipeline
service   FaceSwap servicer, token auth, health, reflection, run_server / SwapServer
cli       `swapstream serve`
"""
