"""Class attention from the board camera.

    sources.py     OpenCV capture adapters (V4L2, GStreamer, RTSP, file, folder): the only capture code
    camera.py      grabber thread: newest frame only, reconnect with backoff, stall detection
    camera_hours.py  when the camera may run (camera.active_hours; pure)
    yunet.py       YuNet pre-processing, decode and NMS (pure; matches cv2.FaceDetectorYN)
    pose.py        yaw/pitch from FSA-Net engines or from the five landmarks (solvePnP)
    attention.py   attentive rule, in-memory tracks, window aggregates (pure)
    pipeline.py    FrameAnalyser (one frame) and AttentionLoop (the analysis thread)
    component.py   AttentionComponent: the daemon component (outbox stream "attention", live section)
    engines.py     the vision engines by manifest name, through edge_agent.inference
    cli_attention.py  `edge-agent attention analyze`

Submodules are imported where used, so `import edge_agent` does not load OpenCV.
"""
