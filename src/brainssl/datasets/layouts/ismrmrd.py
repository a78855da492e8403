"""The ISMRMRD XML header of a fastMRI file: the demo's header, and the geometry readers take from it.

fastMRI's arrays carry no geometry; their ``ismrmrd_header`` does. The demo writes a complete header
(:func:`ismrmrd_header`), and the readers take from any file's header the reconSpace spacing and
matrix (:func:`header_geometry`, :func:`recon_matrix`) and the crop fastMRI applies to a k-space's
RSS image (:func:`recon_shape`). Kept apart from :mod:`brainssl.datasets.layouts.fastmri` (the
layout's writer and reader), which uses these, as does the reconstruction task.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from brainssl.datasets.layouts.errors import SubjectError

__all__ = ["header_geometry", "ismrmrd_header", "recon_matrix", "recon_shape"]

#: Illustrative sequence parameters per acquisition: (protocol name, TR ms, TE ms, TI ms, flip deg).
_SEQUENCE = {
    "AXT1": ("AX T1", 500.0, 10.0, 0.0, 90.0),
    "AXT1PRE": ("AX T1 PRE", 500.0, 10.0, 0.0, 90.0),
    "AXT1POST": ("AX T1 POST", 500.0, 10.0, 0.0, 90.0),
    "AXT2": ("AX T2", 5000.0, 100.0, 0.0, 90.0),
    "AXFLAIR": ("AX FLAIR", 9000.0, 100.0, 2500.0, 90.0),
}
_HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
xmlns:xs="http://www.w3.org/2001/XMLSchema" xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <measurementInformation>
    <measurementID>{nid}</measurementID>
    <patientPosition>HFS</patientPosition>
    <protocolName>{protocol}</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation>
    <systemVendor>brainssl</systemVendor>
    <systemModel>synthetic demo</systemModel>
    <systemFieldStrength_T>3.0</systemFieldStrength_T>
    <receiverChannels>{coils}</receiverChannels>
    <institutionName>brainssl synthetic cohort</institutionName>
  </acquisitionSystemInformation>
  <experimentalConditions>
    <H1resonanceFrequency_Hz>127728000</H1resonanceFrequency_Hz>
  </experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{ex}</x><y>{ey}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{fex:.4f}</x><y>{fey:.4f}</y><z>{fz:.4f}</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{rx}</x><y>{ry}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{frx:.4f}</x><y>{fry:.4f}</y><z>{fz:.4f}</z></fieldOfView_mm>
    </reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{e1max}</maximum><center>{e1centre}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <average><minimum>0</minimum><maximum>0</maximum><center>0</center></average>
      <slice><minimum>0</minimum><maximum>{slicemax}</maximum><center>0</center></slice>
      <contrast><minimum>0</minimum><maximum>0</maximum><center>0</center></contrast>
      <phase><minimum>0</minimum><maximum>0</maximum><center>0</center></phase>
      <repetition><minimum>0</minimum><maximum>0</maximum><center>0</center></repetition>
      <set><minimum>0</minimum><maximum>0</maximum><center>0</center></set>
      <segment><minimum>0</minimum><maximum>0</maximum><center>0</center></segment>
    </encodingLimits>
    <trajectory>cartesian</trajectory>
    <parallelImaging>
      <accelerationFactor><kspace_encoding_step_1>1</kspace_encoding_step_1><kspace_encoding_step_2>1</kspace_encoding_step_2></accelerationFactor>
      <calibrationMode>other</calibrationMode>
    </parallelImaging>
  </encoding>
  <sequenceParameters>
    <TR>{tr}</TR>
    <TE>{te}</TE>
    <TI>{ti}</TI>
    <flipAngle_deg>{flip}</flipAngle_deg>
    <sequence_type>TurboSpinEcho</sequence_type>
  </sequenceParameters>
</ismrmrdHeader>
"""


def ismrmrd_header(
    nid: str,
    acquisition: str,
    kspace_shape: Sequence[int],
    recon_shape: Sequence[int],
    zooms: Sequence[float],
) -> str:
    """The ISMRMRD XML header of a demo file, with the fields fastMRI's ``SliceDataset`` reads.

    Args:
        nid: file stem (the measurement id).
        acquisition: ``AXT1`` ... ``AXFLAIR``.
        kspace_shape: ``(slices, coils, rows, cols)`` of the k-space (rows = readout = ``x``).
        recon_shape: ``(slices, rows, cols)`` of the RSS target (the reconSpace matrix).
        zooms: ``(slice, row, column)`` spacing in mm.
    """
    z, coils, rows, cols = (int(n) for n in kspace_shape)
    _, rx, ry = (int(n) for n in recon_shape)
    protocol, tr, te, ti, flip = _SEQUENCE[acquisition]
    return _HEADER.format(
        nid=nid,
        protocol=protocol,
        coils=coils,
        ex=rows,
        ey=cols,
        fex=rows * zooms[1],
        fey=cols * zooms[2],
        rx=rx,
        ry=ry,
        frx=rx * zooms[1],
        fry=ry * zooms[2],
        fz=zooms[0],
        e1max=cols - 1,
        e1centre=cols // 2,
        slicemax=z - 1,
        tr=tr,
        te=te,
        ti=ti,
        flip=flip,
    )


def header_geometry(path: Path, raw: Any) -> tuple[list[float], tuple[int, int]]:
    """Return (column, row, slice) spacing in mm and the recon matrix (rows, cols) from the XML header.

    ISMRMRD's ``x`` is the readout, the rows of fastMRI's arrays, and ``y`` the phase
    encoding, the columns (fastMRI crops to ``(recon x, recon y)`` as ``(rows, cols)``).
    """
    text = raw.decode() if isinstance(raw, bytes | np.bytes_) else str(raw)
    try:
        tree = ET.fromstring(text)
    except ET.ParseError as err:
        raise SubjectError(path, f"ismrmrd_header is not valid XML: {err}") from err
    recon = next((el for el in tree.iter() if el.tag.endswith("reconSpace")), None)
    if recon is None:
        raise SubjectError(path, "ismrmrd_header has no reconSpace")

    def triple(tag: str) -> list[float]:
        node = next((el for el in recon.iter() if el.tag.endswith(tag)), None)
        if node is None:
            raise SubjectError(path, f"ismrmrd_header reconSpace has no {tag}")
        try:
            return [float(next(el for el in node if el.tag.endswith(axis)).text or "nan") for axis in "xyz"]
        except (StopIteration, ValueError) as err:
            raise SubjectError(path, f"ismrmrd_header reconSpace {tag} lacks a numeric x, y or z") from err

    matrix, fov = triple("matrixSize"), triple("fieldOfView_mm")
    if min(matrix[:2]) < 1:
        raise SubjectError(path, f"ismrmrd_header reconSpace matrixSize {matrix[:2]} is not positive")
    spacing = [fov[1] / matrix[1], fov[0] / matrix[0], fov[2]]
    return spacing, (int(matrix[0]), int(matrix[1]))


def recon_matrix(path: str | Path, raw: Any) -> tuple[int, int]:
    """The reconSpace matrix ``(rows, cols)`` (ISMRMRD ``(x, y)``) of a file's ``ismrmrd_header``.

    Raises:
        SubjectError: for a header that is not XML or has no reconSpace matrix and field of view.
    """
    return header_geometry(Path(path), raw)[1]


def recon_shape(kspace_shape: Sequence[int], matrix: Sequence[int]) -> tuple[int, int]:
    """The ``(rows, cols)`` fastMRI crops a k-space's RSS to: the reconSpace matrix, within the k-space.

    As ``UnetDataTransform`` does with no target: the crop is ``(recon x, recon y)``, but a
    k-space with fewer rows than the crop has columns (fastMRI's "FLAIR 203" files) is cropped
    to a square of its rows; a crop larger than the k-space is limited to it.
    """
    rows, cols = int(kspace_shape[-2]), int(kspace_shape[-1])
    crop = (int(matrix[0]), int(matrix[1]))
    if rows < crop[1]:
        crop = (rows, rows)
    return min(crop[0], rows), min(crop[1], cols)
