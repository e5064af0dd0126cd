"""The pieces of `bench/peer_accuracy.py`: CargoNet against YOLOv8n trained on the same
scans for the same time (tiles, the tiled ONNX adapter, the two training runs, the report).
"""
