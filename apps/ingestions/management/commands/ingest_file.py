import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from apps.core.errors import ApplicationError
from apps.ingestions.apis.serializers import UploadOutputSerializer
from apps.ingestions.engine import RECORDS, SWITCH_INTERVAL
from apps.ingestions.models import Upload, UploadState
from apps.ingestions.services import upload_ingest_path
from apps.tenants.management.commands._common import TENANT_HELP, tenant_or_error

# The bulk CLI's exit statuses (SPEC 6).
EXIT_OK, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2


def exit_code(upload: Upload) -> int:
    """0 completed with no rejected or pending rows; 1 processed, but some rows rejected or
    still pending; 2 failed (or not processed: an earlier upload of the same bytes that is
    still running elsewhere)."""
    if upload.state not in (UploadState.COMPLETED, UploadState.COMPLETED_WITH_ERRORS):
        return EXIT_FAILED
    if upload.state != UploadState.COMPLETED or upload.rows_rejected or upload.rows_pending:
        return EXIT_REJECTED
    return EXIT_OK


class Command(BaseCommand):
    help = (
        "Ingest one NDJSON file for a tenant, synchronously, and print the counts (logs go to "
        "stderr). Exit status: 0 completed with no rejected or pending rows, 1 processed with "
        "rows rejected or pending, 2 failed or could not be read; with --dry-run, the status "
        "a real run would end with."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", type=Path)
        parser.add_argument("--tenant", required=True, help=TENANT_HELP)
        parser.add_argument("--type", choices=sorted(RECORDS), help="record type (else detected)")
        parser.add_argument("--strict", action="store_true", help="all-or-nothing")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="process in full and report, then roll back: nothing is loaded",
        )
        parser.add_argument(
            "--json", action="store_true", help="print the upload as the API shows it"
        )

    def handle(self, *args, path, tenant, type, strict, dry_run, **options):
        # This process runs a pipelined load: a short switch interval keeps the merge
        # thread's GIL handovers off its path (see engine.SWITCH_INTERVAL).
        sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            tenant_obj = tenant_or_error(tenant)
        except CommandError as exc:
            raise CommandError(str(exc), returncode=EXIT_FAILED) from exc
        try:
            outcome = upload_ingest_path(
                tenant=tenant_obj, path=path, record_type=type, strict=strict, dry_run=dry_run
            )
        except ApplicationError as exc:
            raise CommandError(exc.detail, returncode=EXIT_FAILED) from exc
        except OSError as exc:  # unreadable: a folder, no permission, a read error
            raise CommandError(f"Cannot read {path}: {exc}", returncode=EXIT_FAILED) from exc
        up = outcome.upload
        if options["json"]:
            data = {**UploadOutputSerializer(up).data, "already_received": not outcome.created}
            self.stdout.write(json.dumps(data))
        else:
            if not outcome.created:
                self.stdout.write(f"already received as upload {up.id}; not processed again")
            self.stdout.write(f"upload={up.id} type={up.record_type} state={up.state}")
            self.stdout.write(" ".join(f"{k}={v}" for k, v in up.row_counts.items()))
            if up.error_code:
                self.stdout.write(f"error={up.error_code}: {up.error_detail}")
            if up.dry_run:
                self.stdout.write("dry run: the counts are a real run's; nothing was loaded")
        code = exit_code(up)
        if code != EXIT_OK:
            self.stdout.flush()
            sys.exit(code)  # as `makemigrations --check` does: the result is printed above
