import logging

from brainssl.logs import configure_logging, progress


def test_progress_in_a_log_file_is_one_clean_line_per_update(tmp_path):
    log = tmp_path / "job.log"
    configure_logging(log)
    try:
        assert list(progress(range(1000), desc="subjects")) == list(range(1000))
    finally:
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_brainssl", False):
                logging.getLogger().removeHandler(handler)
                handler.close()
    text = log.read_bytes().decode()  # read_text() would turn "\r" into "\n"
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "subjects" in line]
    assert 1 <= len(lines) <= 3, lines
    assert "1000/1000" in lines[-1]


def test_a_long_loop_of_a_job_reports_progress_in_its_log(caplog):
    """Embedding batches here; sessions, cut volumes, dense variants and task encoders alike."""
    import numpy as np

    from brainssl.embed.embed import encode_slices
    from brainssl.pretrain import build_encoder

    encoder = build_encoder("vit_tiny", 32, depth=1).eval()
    with caplog.at_level(logging.INFO, logger="brainssl.progress"):
        encode_slices(encoder, np.zeros((5, 32, 32), np.uint8), batch_size=2)
    assert any("embed batches" in r.getMessage() and "3/3" in r.getMessage() for r in caplog.records)
