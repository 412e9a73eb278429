"""A ROS 2 node that describes the newest camera frame: sensor_msgs/Image in, std_msgs/String out.

UNTESTED: rclpy is not on PyPI, so it could not be installed on the machines where vilau_rt is
developed and tested; only the vilau_rt side (``Pipeline.live`` on a Python frame source) is
covered by the test suite. Run it in a sourced ROS 2 environment (Humble or later):

    python3 examples/ros2_live_caption_node.py --ros-args \
        -p checkpoint:=/path/to/vila-u-7b-256 -p prompt:="What is in front of the robot?" \
        -r image:=/camera/color/image_raw

The camera callback only hands frames over; ``Pipeline.live`` keeps the newest one and drops the
frames that arrive while the model is answering, so captions never fall behind the camera.
"""

from __future__ import annotations

import json
import queue
import threading

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vilau_rt import Pipeline

_STOP = object()


def image_to_array(msg: Image) -> np.ndarray:
    """sensor_msgs/Image (rgb8 or bgr8) -> numpy HWC uint8 RGB, without cv_bridge."""
    if msg.encoding not in ("rgb8", "bgr8"):
        raise ValueError(f"unsupported image encoding {msg.encoding!r}: use rgb8 or bgr8")
    rows = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, : msg.width * 3].reshape(msg.height, msg.width, 3)
    return pixels[..., ::-1] if msg.encoding == "bgr8" else pixels


class LiveCaptionNode(Node):
    def __init__(self):
        super().__init__("vilau_live_caption")
        checkpoint = self.declare_parameter("checkpoint", "").value
        prompt = self.declare_parameter("prompt", "Please describe this image in detail.").value
        max_new_tokens = self.declare_parameter("max_new_tokens", 32).value
        self.pipe = Pipeline.from_pretrained(checkpoint)
        self.frames: queue.Queue = queue.Queue()
        self.pub = self.create_publisher(String, "caption", 10)
        self.create_subscription(Image, "image", self.on_image, 1)
        self.loop = self.pipe.live(self.frame_source(), prompt, max_new_tokens=max_new_tokens)
        self.worker = threading.Thread(target=self.answer, daemon=True)
        self.worker.start()

    def on_image(self, msg: Image) -> None:
        self.frames.put(image_to_array(msg))

    def frame_source(self):
        # an iterable of frames; the live loop's reader thread pulls from it and keeps the newest
        while (frame := self.frames.get()) is not _STOP:
            yield frame

    def answer(self) -> None:
        for r in self.loop:
            payload = {"frame": r.frame, "text": r.text, "latency_ms": round(r.latency_ms, 1),
                       "dropped": r.dropped}  # fmt: skip
            self.pub.publish(String(data=json.dumps(payload)))

    def destroy_node(self):
        self.loop.stop()
        self.frames.put(_STOP)
        self.loop.close()
        return super().destroy_node()


def main() -> None:
    rclpy.init()
    node = LiveCaptionNode()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
