"""sensor_msgs image <-> numpy without cv_bridge (which has no ROS 2 wheel), and the
colour layouts frames come in.

Raw images are viewed in place where the layout allows (8-bit encodings: a
numpy view over the message buffer, row padding skipped by strides); colour
order is resolved later by the pipeline, after its resize, on the small image.
Every malformed message raises ImageError with a one-line reason.

The functions only touch message attributes (height, width, encoding, step,
data, format), so they work on rclpy messages and on rosbags' decoded ones; no
ROS library is imported. That is why this lives in runtime, not in ros/: the
node, bag evaluation and the doctor all turn messages into frames the same way.
"""
from __future__ import annotations

import array
import logging
from typing import Tuple

import cv2
import numpy as np

log = logging.getLogger(__name__)

# encoding -> (channels of the numpy view, colour layout for the pipeline)
RAW_ENCODINGS = {
    "rgb8": (3, "rgb"),
    "bgr8": (3, "bgr"),
    "rgba8": (4, "rgba"),
    "bgra8": (4, "bgra"),
    "mono8": (1, "mono"),
    "8UC1": (1, "mono"),
    "8UC3": (3, "bgr"),  # OpenCV's convention for untyped 3- and 4-channel images (cv_bridge's too)
    "8UC4": (4, "bgra"),
    # packed YUV 4:2:2, 2 bytes a pixel; converted to RGB at full size
    "yuv422": (2, "uyvy"),
    "uyvy": (2, "uyvy"),
    "yuv422_yuy2": (2, "yuy2"),
    "yuyv": (2, "yuy2"),
    # Bayer mosaics from cameras that leave demosaicing to the host; demosaiced at full size
    "bayer_rggb8": (1, "bayer_rggb"),
    "bayer_bggr8": (1, "bayer_bggr"),
    "bayer_gbrg8": (1, "bayer_gbrg"),
    "bayer_grbg8": (1, "bayer_grbg"),
}
# 16-bit words (byte order from is_bigendian), scaled to 8 bits as full-range data (the high byte:
# within one level of cv_bridge's 255/65535); then handled as their 8-bit twin.
WORD_ENCODINGS = {"mono16": "mono8", "rgb16": "rgb8", "bgr16": "bgr8", "rgba16": "rgba8", "bgra16": "bgra8",
                  "bayer_rggb16": "bayer_rggb8", "bayer_bggr16": "bayer_bggr8", "bayer_gbrg16": "bayer_gbrg8",
                  "bayer_grbg16": "bayer_grbg8"}
# Depth and other measurement images: not camera frames, refused as such.
NOT_FRAMES = ("16UC1", "32FC1", "16SC1", "32SC1", "64FC1")
_TO_RGB_AT_FULL_SIZE = {"uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuy2": cv2.COLOR_YUV2RGB_YUY2,
                        # OpenCV's classic names (from the second row's pattern: BG = ROS's rggb), as
                        # cv_bridge maps them; the RGGB-style aliases only exist from OpenCV 4.6, and
                        # Ubuntu 22.04's python3-opencv is 4.5.4
                        "bayer_rggb": cv2.COLOR_BayerBG2RGB, "bayer_bggr": cv2.COLOR_BayerRG2RGB,
                        "bayer_gbrg": cv2.COLOR_BayerGR2RGB, "bayer_grbg": cv2.COLOR_BayerGB2RGB}
DEFAULT_MAX_PIXELS = 4096 * 4096

# Colour layouts a frame can come in: the OpenCV conversion to RGB (None: already RGB),
# and the channels a frame of that layout has.
TO_RGB = {
    "rgb": None,
    "bgr": cv2.COLOR_BGR2RGB,
    "rgba": cv2.COLOR_RGBA2RGB,
    "bgra": cv2.COLOR_BGRA2RGB,
    "mono": cv2.COLOR_GRAY2RGB,
}
CHANNELS = {"rgb": 3, "bgr": 3, "rgba": 4, "bgra": 4, "mono": 1}


class ImageError(ValueError):
    """A message that cannot be turned into a frame."""


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    if width * height > max_pixels:
        raise ImageError(f"image size {width}x{height} exceeds the max_image_pixels cap of {max_pixels}")


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, str]:
    """sensor_msgs/Image -> (uint8 array, colour layout: rgb|bgr|rgba|bgra|mono)."""
    enc = str(msg.encoding)
    if enc in NOT_FRAMES:
        raise ImageError(f"encoding '{enc}' is a depth or measurement image, not a camera frame: subscribe to "
                         "the camera's colour or mono topic")
    words = enc in WORD_ENCODINGS
    if enc not in RAW_ENCODINGS and not words:
        raise ImageError(f"unsupported encoding '{enc}'; supported: {', '.join([*RAW_ENCODINGS, *WORD_ENCODINGS])}")
    ch, layout = RAW_ENCODINGS[WORD_ENCODINGS.get(enc, enc)]
    size = 2 if words else 1  # bytes a channel
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    _check_size(w, h, max_pixels)
    if w % 2 and ch == 2:
        raise ImageError(f"{enc} image width {w} is odd; YUV 4:2:2 needs an even width")
    if step < w * ch * size:
        raise ImageError(f"step {step} is smaller than width x channels{' x 2 bytes' if words else ''} = "
                         f"{w * ch * size} for {enc}")
    if layout.startswith("bayer") and (w < 2 or h < 2):
        raise ImageError(f"{enc} image {w}x{h} is smaller than one 2x2 Bayer cell")
    buf = np.frombuffer(msg.data, np.uint8) if len(msg.data) else np.empty(0, np.uint8)
    if buf.size < step * h:
        raise ImageError(f"data has {buf.size} bytes, less than step x height = {step * h}")
    # A view: rows of `step` bytes, of which the first w*ch*size are pixels.
    img = buf[: step * h].reshape(h, step)[:, : w * ch * size]
    if words:
        dtype = ">u2" if int(getattr(msg, "is_bigendian", 0)) else "<u2"
        w16 = np.ascontiguousarray(img).view(dtype)
        _warn_if_low_bits(enc, w16)
        img = (w16 >> 8).astype(np.uint8)
    img = img.reshape(h, w) if ch == 1 else img.reshape(h, w, ch)
    if layout in _TO_RGB_AT_FULL_SIZE:
        return cv2.cvtColor(np.ascontiguousarray(img), _TO_RGB_AT_FULL_SIZE[layout]), "rgb"
    return img, layout


_warned_low_bits = False


def _warn_if_low_bits(enc: str, words: np.ndarray) -> None:
    """Once: a 16-bit frame whose values all sit in the low 12 bits is most likely a 10/12-bit
    camera's data, which reads nearly black as full-range 16-bit."""
    global _warned_low_bits
    if not _warned_low_bits and words.size and 0 < int(words.max()) < 4096:
        _warned_low_bits = True
        log.warning(f"{enc} frame: every value is below 4096, so it reads nearly black as 16-bit data. A camera "
                    "with 10- or 12-bit pixels in the low bits should publish 8-bit (or left-aligned) frames")


_warned_grey: set = set()  # the camera encodings said to arrive grey


def _warn_grey(fmt: str, enc: str, bayer: bool) -> None:
    """Once per camera encoding: ROS 2's compressed (JPEG) transport turns an image it does not take
    for colour to mono8 before encoding ("bayer_rggb8; jpeg compressed mono8"; Humble's does so
    for yuv422 too), so the frame is segmented without colour."""
    if enc not in _warned_grey:
        _warned_grey.add(enc)
        kind, fix = (("the Bayer camera's image", "publish it debayered (image_proc) or use the png transport")
                     if bayer else ("the colour camera's image", "have the camera driver publish rgb8 or bgr8"))
        log.warning(f"compressed frames '{fmt}': the JPEG transport sent {kind} as grey, so it is segmented "
                    f"without colour (worse); {fix}")


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (0xC0-0xCF but DHT, JPG and DAC): they hold the frame's size
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def encoded_size(data: np.ndarray) -> Tuple[int, int] | None:
    """(width, height) from a PNG's IHDR or a JPEG's start-of-frame header, read before decoding
    so that an oversized frame is refused before its pixels are allocated; None if not found."""
    if data[:8].tobytes() == _PNG_SIGNATURE and data.size >= 24 and data[12:16].tobytes() == b"IHDR":
        return int.from_bytes(data[16:20].tobytes(), "big"), int.from_bytes(data[20:24].tobytes(), "big")
    if data[:2].tobytes() != b"\xff\xd8":
        return None
    i, end = 2, data.size  # the frame header follows the APPn segments, skipped by their lengths
    while i + 4 <= end:  # marker segments: 0xFF, marker, 2-byte length (which counts itself)
        if data[i] != 0xFF:  # stray bytes before a marker: libjpeg skips them (with a warning), so does this
            ff = np.flatnonzero(data[i:] == 0xFF)
            if ff.size == 0:
                return None
            i += int(ff[0])
            continue
        marker = int(data[i + 1])
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length (TEM, RSTn, SOI, EOI)
            i += 2
        elif marker in _JPEG_SOF:
            if i + 9 > data.size:
                return None
            h, w = (int.from_bytes(data[j:j + 2].tobytes(), "big") for j in (i + 5, i + 7))
            return (w, h) if h else None  # height 0: set later by a DNL marker
        elif marker == 0xDA:  # start of scan before any frame header: not a frame this reads
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4].tobytes(), "big")
    return None


def compressed_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, str]:
    """sensor_msgs/CompressedImage (JPEG or PNG) -> (uint8 array, colour layout).

    image_transport's format is "ENCODING; jpeg compressed TARGET" (or png): a Bayer mosaic
    (bayer_*) arrives compressed as it is and is demosaiced here, as a raw one would be; 16-bit
    PNG frames are scaled to 8 bits as raw 16-bit frames are."""
    data = np.frombuffer(msg.data, np.uint8) if len(msg.data) else np.empty(0, np.uint8)
    if data.size == 0:
        raise ImageError("compressed image has no data")
    fmt = str(getattr(msg, "format", "")).lower()
    if "compresseddepth" in fmt or fmt.startswith("16uc1") or fmt.startswith("32fc1"):
        raise ImageError(f"compressed depth images ('{msg.format}') are not camera frames")
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageError(f"unsupported compressed format '{msg.format}'; supported: jpeg, png")
    size = encoded_size(data)
    if size is not None:
        _check_size(*size, max_pixels)
    elif data[:8].tobytes() != _PNG_SIGNATURE and data[:2].tobytes() != b"\xff\xd8":
        # another format OpenCV would decode (BMP, TIFF, WebP) before its size could be checked
        raise ImageError(f"compressed image ({data.size} bytes, format '{msg.format}') is neither JPEG nor PNG")
    else:  # decoding it blind could allocate gigabytes (a header this cannot read, OpenCV's decoder may)
        raise ImageError(f"compressed image ({data.size} bytes, format '{msg.format}') cannot be decoded: its "
                         "header gives no frame size before its data (cut short or damaged)")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as e:  # e.g. a header OpenCV refuses; its message is several lines
        raise ImageError(f"compressed image ({data.size} bytes, format '{msg.format}') cannot be decoded "
                         f"({str(e).strip().splitlines()[0][:120]})") from None
    if img is None:
        raise ImageError(f"compressed image ({data.size} bytes, format '{msg.format}') cannot be decoded")
    _check_size(img.shape[1], img.shape[0], max_pixels)
    enc = fmt.split(";")[0].strip() if ";" in fmt else ""
    if img.dtype == np.uint16:
        _warn_if_low_bits(enc or "16-bit compressed", img)
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ImageError(f"compressed image decodes to {img.dtype}; supported: 8- or 16-bit frames")
    bayer = RAW_ENCODINGS.get(WORD_ENCODINGS.get(enc, enc), (0, ""))[1]
    target = fmt.split("compressed", 1)[1].strip() if "compressed" in fmt else ""
    channels = RAW_ENCODINGS.get(WORD_ENCODINGS.get(enc, enc), (1, ""))[0]
    if target.startswith("mono") and (bayer.startswith("bayer") or channels > 1):
        # ROS 2's JPEG transport greyed a colour camera's frame (a mosaic; Humble's, YUV too): no colour to recover
        _warn_grey(msg.format, enc, bayer.startswith("bayer"))
    elif bayer.startswith("bayer") and img.ndim == 2:
        if min(img.shape) < 2:
            raise ImageError(f"{enc} image {img.shape[1]}x{img.shape[0]} is smaller than one 2x2 Bayer cell")
        return cv2.cvtColor(img, _TO_RGB_AT_FULL_SIZE[bayer]), "rgb"
    if img.ndim == 2:
        return img, "mono"
    if img.shape[2] not in (3, 4):
        raise ImageError(f"compressed image has {img.shape[2]} channels; supported: 1, 3, 4")
    # OpenCV hands back the bytes in the order they were given to the encoder: BGR from
    # image_transport ("... compressed bgr8"), RGB from an encoder that says "compressed rgb8"
    if "compressed rgb" in fmt.split(";", 1)[-1]:
        return img, "rgb" if img.shape[2] == 3 else "rgba"
    return img, "bgr" if img.shape[2] == 3 else "bgra"


def message_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> Tuple[np.ndarray, str]:
    """A sensor_msgs Image or CompressedImage (only the latter has ``format``) -> (array, layout)."""
    if hasattr(msg, "format"):
        return compressed_to_array(msg, max_pixels)
    return image_to_array(msg, max_pixels)


def to_rgb(frame: np.ndarray, layout: str) -> np.ndarray:
    """A frame in any colour layout as a contiguous RGB array (no copy when it already is one)."""
    if layout not in TO_RGB:
        raise ValueError(f"unknown colour layout '{layout}'; valid choices: {', '.join(TO_RGB)}")
    code = TO_RGB[layout]
    return np.ascontiguousarray(frame if code is None else cv2.cvtColor(frame, code))


def fill_image(msg, header, img: np.ndarray, encoding: str):
    """Fill a sensor_msgs/Image with a contiguous uint8 array (H x W or H x W x C)."""
    img = np.ascontiguousarray(img)
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}.get(encoding)
    if img.dtype != np.uint8 or (channels is not None and (1 if img.ndim == 2 else img.shape[2]) != channels):
        raise ValueError(f"{encoding} image from a {img.dtype} array of shape {img.shape}")  # a bug, not input
    msg.header = header
    msg.height, msg.width = int(img.shape[0]), int(img.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(img.strides[0])
    msg.data = array.array("B", img.tobytes())
    return msg
