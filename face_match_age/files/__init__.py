"""Files in and out: one downloader, one CSV reader, atomic result files and checkpoint files on disk."""
