"""An in-memory Cloud Storage emulator (gcp-storage-emulator) for gs:// tests: gcsfs (epath's
filesystem for gs://) and tensorstore (orbax's arrays) both talk to it over HTTP.

The emulator omits the ``x-goog-generation`` header on media downloads, which tensorstore reads
to know an object's generation; ``serve`` adds it. Run as a script it serves until killed:
``python tests/gcs_emulator.py PORT``.
"""
import logging
import sys
import time

BUCKET = "hh-test"


def env(port: int) -> dict[str, str]:
  """The variables that point gcsfs and tensorstore at the emulator (anonymous access)."""
  url = f"http://localhost:{port}"
  return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
          "GOOGLE_CLOUD_PROJECT": "hh-test"}


def serve(port: int):
  """Starts the emulator in this process (a thread) with an empty bucket ``BUCKET``."""
  from gcp_storage_emulator.handlers import objects
  from gcp_storage_emulator.server import create_server
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
  download = objects.download
  if not getattr(download, "with_generation", False):
    def with_generation(request, response, storage, *args, **kwargs):
      download(request, response, storage, *args, **kwargs)
      try:
        obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
      except Exception:  # noqa: BLE001 — not found: the original handler answered 404
        return
      response["x-goog-generation"] = str(obj.get("generation", "1"))
      response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
    with_generation.with_generation = True
    objects.download = with_generation
  server = create_server("localhost", port, in_memory=True, default_bucket=BUCKET)
  server.start()
  return server


if __name__ == "__main__":
  serve(int(sys.argv[1]))
  print("serving", flush=True)
  while True:
    time.sleep(3600)
