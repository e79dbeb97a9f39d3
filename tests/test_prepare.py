"""When a run's files are read in worker processes rather than in a thread beside the embedder."""

from ingest.prepare import is_big


def test_many_files_a_big_total_or_an_image_with_other_work_take_worker_processes():
    assert not is_big(31, 1024) and is_big(32, 1024)
    assert not is_big(1, 8 * 1024 * 1024 - 1) and is_big(1, 8 * 1024 * 1024)
    # OCR of an image takes seconds of CPU: beside anything else, it goes to a worker, never this process.
    assert not is_big(1, 1024, images=1) and is_big(2, 1024, images=1)
