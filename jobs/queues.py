"""The queues, from one enum: settings, routing, Procfile workers and tests all read it.

Separate queues keep fast, user-visible work (emails) from waiting behind slow work
(PDFs, exports); each queue group gets its own worker process (Procfile).
"""

from enum import StrEnum


class Queue(StrEnum):
    EMAILS = "emails"  # confirmation and result emails: small, user-visible, latency matters
    KYC = "kyc"  # vendor calls: rate-limited, slow network
    DOCUMENTS = "documents"  # invoice PDFs and CSV exports: CPU and seconds each
    DEFAULT = "default"  # housekeeping, FX sync, alerts
