"""DICOM files built from 8-bit X-rays with pydicom, for tests."""

from pathlib import Path

import numpy as np


def write_dicom(path: Path, gray8: np.ndarray, *, bits: int = 16, monochrome1: bool = False,
                slope: float = 1.0, intercept: float = 0.0, window: bool = True, syntax=None,
                tags: dict | None = None) -> Path:
    """A single-frame DICOM whose display (modality LUT, window, MONOCHROME1) is exactly ``gray8``.

    16-bit: stored = (gray * 257 - intercept) / slope, windowed by centre 32768, width 65536, so
    DICOM's linear window gives back gray * 257 * 255 / 65535 = gray. 8-bit: centre 128, width 256.
    ``tags`` are set last (e.g. ``{"Modality": "CT"}``; a value None deletes the tag).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    gray = gray8.astype(np.float64)
    value = gray * (257 if bits == 16 else 1)
    if monochrome1:
        value = (65535 if bits == 16 else 255) - value
    stored = np.rint((value - intercept) / slope).astype(np.uint16 if bits == 16 else np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = gray8.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = (32768, 65536) if bits == 16 else (128, 256)
    ds.PixelData = stored.tobytes()
    for key, value in (tags or {}).items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def deflate_bomb(path: Path, inflated_mb: int = 512, group_length: bool = False) -> Path:
    """A deflated DICOM (1.2.840.10008.1.2.1.99) whose dataset inflates to ``inflated_mb`` MB from
    about 0.5 MB; without ``group_length`` its file meta has no (0002,0000), as PS3.10 allows
    readers to meet. The compressed stream is made in 1 MB pieces, never whole in memory."""
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    small = write_dicom(path, np.zeros((8, 8), np.uint8), syntax=DeflatedExplicitVRLittleEndian).read_bytes()
    assert small[132:138] == b"\x02\x00\x00\x00UL"
    meta_end = 144 + int.from_bytes(small[140:144], "little")
    meta = small[:meta_end] if group_length else small[:132] + small[144:meta_end]
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(2**20)
    stream = [deflater.compress(zeros) for _ in range(inflated_mb)]
    path.write_bytes(meta + b"".join(stream) + deflater.flush())
    return path
