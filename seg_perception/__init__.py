"""seg_perception: real-time semantic segmentation for ROS 2 on NVIDIA Jetson."""
__version__ = "0.1.0"
