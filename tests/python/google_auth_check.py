"""Checks that PyPI google-auth works unchanged against metadatafs-emulator.

Run with GCE_METADATA_HOST and GCE_METADATA_IP pointing at the emulator (tests/google_auth.rs does).
Exit 0: all good; exit 77: google-auth (or requests) is not installed; anything else: a failure.
"""

import base64
import json
import os
import sys

try:
    import google.auth
    import google.auth.transport.requests
    from google.auth import compute_engine
    from google.auth.compute_engine import _metadata
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"google-auth not importable: {e}")
    sys.exit(77)

EMAIL = "523926462582-compute@developer.gserviceaccount.com"


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def main():
    host = os.environ["GCE_METADATA_HOST"]
    request = google.auth.transport.requests.Request()

    check(_metadata.is_on_gce(request), f"is_on_gce says yes for {host}")
    check(_metadata.get_project_id(request) == "emulated-project", "project id")

    creds = compute_engine.Credentials()
    creds.refresh(request)
    check(creds.token.startswith("ya29.emulated."), "access token obtained")
    check(creds.service_account_email == EMAIL, "service account email")
    check(
        "https://www.googleapis.com/auth/logging.write" in (creds.scopes or []),
        f"scopes {creds.scopes}",
    )
    check(creds.expiry is not None and not creds.expired, "token expiry")

    again = compute_engine.Credentials()
    again.refresh(request)
    check(again.token == creds.token, "the MDS hands out the cached token again")

    scoped = compute_engine.Credentials(
        scopes=["https://www.googleapis.com/auth/logging.write"]
    )
    scoped.refresh(request)
    check(scoped.token.startswith("ya29.emulated."), "token requested with scopes=")

    id_creds = compute_engine.IDTokenCredentials(
        request, "https://example.com", use_metadata_identity_endpoint=True
    )
    id_creds.refresh(request)
    payload = id_creds.token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    check(claims["aud"] == "https://example.com", "ID token audience")
    check(claims["email"] == EMAIL, "ID token email")
    check("compute_engine" in claims.get("google", {}), "ID token format=full claims")

    default_creds, project = google.auth.default()
    check(isinstance(default_creds, compute_engine.Credentials), "google.auth.default() picks GCE")
    check(project == "emulated-project", "google.auth.default() project")
    print("all google-auth checks passed")


if __name__ == "__main__":
    main()
