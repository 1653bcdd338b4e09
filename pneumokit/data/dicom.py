"""DICOM (``.dcm``) X-rays as 8-bit grayscale, with pydicom: the step before the preprocessing rule.

A DICOM file becomes an 8-bit grayscale image in four steps, the way a viewer
shows it; the preprocessing rule (``pneumokit.preprocessing``) then applies
as to any JPEG or PNG:

1. the stored values go through the modality LUT (``RescaleSlope`` /
   ``RescaleIntercept``, or a Modality LUT Sequence);
2. the first VOI window (``WindowCenter`` / ``WindowWidth``) maps them to
   0..255 by DICOM's linear window function (PS3.3 C.11.2.1.2); without a
   window, a VOI LUT Sequence is applied and its output range scaled to
   0..255; without either, the image's own min..max is;
3. ``MONOCHROME1`` images (white = low values) are inverted, so bone is
   bright as in ``MONOCHROME2`` and in JPEG X-rays, and so are images whose
   ``PresentationLUTShape`` is ``INVERSE`` (once, when both say so);
4. values are rounded to 8 bits.

Only single-frame grayscale images are read. A compressed file whose codec
is not installed is refused naming its transfer syntax and the package to
install.
"""

from __future__ import annotations

import io
import math
import re
import zlib

import numpy as np

from ..core.config import shape_refusal
from ..errors import ImageDecodeError, OutOfScopeError

DICOM_EXTENSIONS = (".dcm",)
# The header gate (docs/gate.md). Projection radiographs: CR (computed radiography, storage
# plates) and DX (digital radiography) are how chest X-rays are stored; RG (film-screen
# radiography) is read too, for digitised film. Everything else (CT, MR, US, MG, NM, PT, OT,
# SC, ...) is another kind of image, or one whose kind is unknown.
ACCEPTED_MODALITIES = ("CR", "DX", "RG")
FRONTAL_VIEWS = ("PA", "AP")
# ViewPosition words that say "not frontal", even beside PA or AP (DICOM's defined terms and
# what exports write in their place)
OTHER_VIEWS = ("LL", "RL", "LLD", "RLD", "LLO", "RLO", "LAO", "RAO", "LPO", "RPO", "LAT", "LATERAL",
               "OBL", "OBLIQUE", "DECUBITUS")
# BodyPartExamined is free text in practice ("PORT CHEST", "CHEST PA", "TORAX"): a word that
# names the chest is enough
CHEST_BODY_PARTS = ("CHEST", "THORAX", "TORAX", "THORAC", "LUNG", "PULMO")
GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
CODEC_HINT = "pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg (or gdcm)"


def quiet_pydicom() -> None:
    """Silence pydicom's warnings in this process (the CLI and ``serve`` call it once at start;
    ``warnings.catch_warnings`` is not thread-safe, so no decode toggles filters). What a warning
    would say that matters for a row is said in the row: NumberOfFrames 0 is a note; values
    pydicom cannot use are the row's error."""
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` starts like a DICOM Part 10 file ("DICM" after the 128-byte preamble)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def read_dicom(data: bytes, max_pixels: float = math.inf, *,
               scope: bool = True) -> tuple[np.ndarray, list[str]]:
    """The 8-bit (H, W) grayscale image of a DICOM file's bytes, by the rule above, and notes. An
    image over ``max_pixels`` (from its header: nothing is decoded) is refused, as is any header
    value pydicom or the rule cannot use: ``ImageDecodeError``, never another type. With
    ``scope``, the header gate comes first (docs/gate.md): a file that is not a frontal chest
    radiograph (Modality, ViewPosition, BodyPartExamined, colour) raises ``OutOfScopeError``
    naming the tag and value, before its pixels are decoded; the notes name tags that are
    missing (not a refusal: many exports drop them)."""
    try:
        return _gray8(data, max_pixels, scope)
    except (ImageDecodeError, OutOfScopeError):
        raise
    except Exception as exc:  # damaged headers raise many types from pydicom and NumPy
        why = f"{type(exc).__name__}: {str(exc)[:200]}"
        raise ImageDecodeError(f"not a readable DICOM file ({why})") from None


DEFLATED = b"1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian: the dataset is zlib data
HEADER_ALLOWANCE = 16 * 2**20  # bytes a deflated dataset may hold beyond its 16-bit pixels


LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")


def _meta_end(data: bytes) -> tuple[int, bytes] | None:
    """Where the file meta group (0002,xxxx) ends and its transfer syntax, read element by element
    (explicit VR little endian, as PS3.10 requires): the group length (0002,0000) is optional and
    is not trusted. None when the group cannot be walked that way."""
    pos, syntax = 132, b""
    while pos + 8 <= len(data) and data[pos:pos + 2] == b"\x02\x00":
        element, vr = int.from_bytes(data[pos + 2:pos + 4], "little"), data[pos + 4:pos + 6]
        if not vr.isalpha():
            return None
        if vr in LONG_VRS:
            size, start = int.from_bytes(data[pos + 8:pos + 12], "little"), pos + 12
        else:
            size, start = int.from_bytes(data[pos + 6:pos + 8], "little"), pos + 8
        if element == 0x0010:
            syntax = data[start:start + size].rstrip(b"\x00 ")
        pos = start + size
    return (pos, syntax) if pos <= len(data) else None


def _check_inflated_size(data: bytes, max_pixels: float) -> None:
    """A deflated dataset must not inflate past what an image within ``max_pixels`` needs
    (16-bit pixels, plus ``HEADER_ALLOWANCE``): counted by inflating it in 1 MB pieces that are
    thrown away, before pydicom inflates all of it in memory."""
    meta = _meta_end(data)
    if meta is None:
        if DEFLATED in data[132:132 + 2**16]:  # pydicom might still find it: refuse, do not guess
            raise ImageDecodeError("deflated DICOM whose file meta group cannot be read element by element")
        return
    end, syntax = meta
    if syntax != DEFLATED or not math.isfinite(max_pixels):
        return
    limit = int(max_pixels * 2) + HEADER_ALLOWANCE
    inflater, pending, total = zlib.decompressobj(-zlib.MAX_WBITS), data[end:], 0
    while pending and total <= limit:
        piece = inflater.decompress(pending, 2**20)
        total, pending = total + len(piece), inflater.unconsumed_tail
        if not piece:
            break
    if total > limit:
        raise ImageDecodeError(f"deflated DICOM that inflates to more than {limit / 1e6:.0f} MB, more "
                               f"than an image of {max_pixels / 1e6:.3g} megapixels needs "
                               "(PIL.Image.MAX_IMAGE_PIXELS)")


def _gray8(data: bytes, max_pixels: float, scope: bool) -> tuple[np.ndarray, list[str]]:
    import pydicom
    from pydicom.pixels import apply_modality_lut

    _check_inflated_size(data, max_pixels)
    ds = pydicom.dcmread(io.BytesIO(data))
    notes = _scope_notes(ds) if scope else []
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM file without pixel data (a report or a structure, not an image)")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    frames = ds.get("NumberOfFrames")
    if frames is not None and str(frames).strip() in ("", "0"):
        # invalid (PS3.3: 1 or more); pydicom would warn and assume 1: said here, in the row
        notes.append(f"DICOM NumberOfFrames is {str(frames).strip() or 'empty'} (invalid): read as 1 frame")
        ds.NumberOfFrames = 1
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or int(ds.get("NumberOfFrames", 1)) != 1:
        raise ImageDecodeError(f"DICOM {photometric} with {ds.get('NumberOfFrames', 1)} frame(s): only "
                               "single-frame grayscale (MONOCHROME1/2) X-rays are read")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if scope and (why := shape_refusal(columns, rows)):
        raise OutOfScopeError(why)
    pixels = rows * columns
    if pixels > max_pixels:
        raise ImageDecodeError(f"image is {pixels / 1e6:.3g} megapixels, over the limit of "
                               f"{max_pixels / 1e6:.3g} megapixels (PIL.Image.MAX_IMAGE_PIXELS, the guard "
                               "against decompression bombs); downscale it first")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises several types when a codec is missing or data is bad
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", str(syntax))
        if getattr(syntax, "is_compressed", False):
            raise ImageDecodeError(f"compressed DICOM ({name}) and no codec for it is installed, or the "
                                   f"data is damaged: {CODEC_HINT}") from None
        raise ImageDecodeError(f"DICOM pixel data cannot be read ({type(exc).__name__}: {exc})") from None
    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    gray = _voi_to_unit(values, ds)
    inverse = str(ds.get("PresentationLUTShape", "") or "").strip().upper() == "INVERSE"
    # DX stores MONOCHROME1 with INVERSE (PS3.3 C.8.11.6): one inversion, whichever says it
    if photometric == "MONOCHROME1" or inverse:
        gray = 1.0 - gray
    return np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8), notes


def _scope_notes(ds) -> list[str]:
    """The header gate on a read dataset: ``OutOfScopeError``, or notes on missing tags."""
    tags = {k: _text(ds.get(k)) for k in ("Modality", "ViewPosition", "BodyPartExamined",
                                           "PhotometricInterpretation")}
    refusal = _refusal(tags)
    if refusal:
        raise OutOfScopeError(refusal)
    missing = [k for k in ("Modality", "ViewPosition", "BodyPartExamined") if not tags[k]]
    return [f"DICOM {', '.join(missing)} missing: not checked"] if missing else []


def _text(value) -> str:
    """A header value as upper-case text: several values joined by a backslash, as DICOM writes
    them; unprintable characters escaped and long values cut (it goes into one-line reasons)."""
    if value is None:
        return ""
    parts = list(value) if _multi(value) else [value]
    text = "\\".join(str(v) for v in parts).strip().upper()
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)[:64]


def _refusal(tags: dict[str, str]) -> str | None:
    modality, view, part, colour = (tags[k] for k in ("Modality", "ViewPosition", "BodyPartExamined",
                                                       "PhotometricInterpretation"))
    view_words, part_text = set(re.findall(r"[A-Z]+", view)), part.replace(" ", "")
    if modality and modality not in ACCEPTED_MODALITIES:
        return (f"DICOM Modality is {modality}; pneumokit reads chest radiographs "
                f"({', '.join(ACCEPTED_MODALITIES)})")
    if view and (view_words & set(OTHER_VIEWS) or not view_words & set(FRONTAL_VIEWS)):
        return f"DICOM ViewPosition is {view}; pneumokit reads frontal views ({' or '.join(FRONTAL_VIEWS)})"
    if part and not any(word in part_text for word in CHEST_BODY_PARTS):
        return f"DICOM BodyPartExamined is {part}; pneumokit reads chest X-rays (CHEST or THORAX)"
    if colour and colour not in GRAYSCALE:
        return (f"DICOM PhotometricInterpretation is {colour}, not grayscale (MONOCHROME1/2): a chest "
                "radiograph is grayscale")
    return None


def dicom_info(data: bytes) -> tuple[int, int, str]:
    """Width, height and a mode label (e.g. ``DICOM MONOCHROME1 12-bit``) from the header only."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (int(ds.get("Columns", 0)), int(ds.get("Rows", 0)),
            f"DICOM {ds.get('PhotometricInterpretation', '?')} {ds.get('BitsStored', '?')}-bit")


def _voi_to_unit(values: np.ndarray, ds) -> np.ndarray:
    """Values of interest as [0, 1]: the first window, else the VOI LUT, else min..max."""
    from pydicom.pixels import apply_voi_lut

    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if _multi(center) else center)
        w = float(width[0] if _multi(width) else width)
        if w >= 1:
            # DICOM PS3.3 C.11.2.1.2.1, linear: to [0, 1] instead of [y_min, y_max]
            return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)
    if "VOILUTSequence" in ds:
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        lut = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), np.float64)
        return np.clip(lut / (2**bits - 1), 0.0, 1.0)
    low, high = float(values.min()), float(values.max())
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def _multi(value) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)
