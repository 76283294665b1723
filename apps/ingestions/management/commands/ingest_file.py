import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApplicationError
from apps.ingestions.engine.records import RECORDS
from apps.ingestions.services import upload_ingest_path
from apps.tenants.management.commands._common import tenant_or_error


class Command(BaseCommand):
    help = "Ingest one NDJSON file for a tenant, synchronously, and print the counts."

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--tenant", required=True, help="tenant id")
        parser.add_argument("--type", choices=sorted(RECORDS), help="record type (else detected)")
        parser.add_argument("--strict", action="store_true", help="all-or-nothing")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, path, tenant, type, strict, **options):
        tenant_obj = tenant_or_error(tenant)
        try:
            outcome = upload_ingest_path(
                tenant=tenant_obj, path=path, record_type=type, strict=strict
            )
        except ApplicationError as exc:
            raise CommandError(exc.detail) from exc
        up = outcome.upload
        counts = up.row_counts
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "upload_id": str(up.id),
                        "type": up.record_type,
                        "state": up.state,
                        "already_received": not outcome.created,
                        "rows": counts,
                        "error": {"code": up.error_code, "detail": up.error_detail}
                        if up.error_code
                        else None,
                    }
                )
            )
            return
        if not outcome.created:
            self.stdout.write(f"already received as upload {up.id}; not processed again")
        self.stdout.write(f"upload={up.id} type={up.record_type} state={up.state}")
        self.stdout.write(" ".join(f"{k}={v}" for k, v in counts.items()))
        if up.error_code:
            self.stdout.write(f"error={up.error_code}: {up.error_detail}")
