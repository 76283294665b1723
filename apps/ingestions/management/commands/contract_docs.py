from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from apps.ingestions.apis.contract import CONTRACT_URL
from apps.ingestions.engine import contract_markdown

DOCS = Path(settings.BASE_DIR) / "docs" / "contract.md"


def contract_docs() -> str:
    """docs/contract.md as the record definition makes it now."""
    return contract_markdown(url=CONTRACT_URL)


class Command(BaseCommand):
    help = (
        "Write docs/contract.md, the field table of each record type, from the record "
        "definition (the same one the contract's JSON Schemas come from). --check: exit 1 "
        "when the file differs from what would be written."
    )

    def add_arguments(self, parser):
        parser.add_argument("--check", action="store_true", help="compare, do not write")
        parser.add_argument("--output", type=Path, default=DOCS, help="the file to write")

    def handle(self, *args, check: bool, output: Path, **options):
        text = contract_docs()
        if check:
            if not output.exists() or output.read_text() != text:
                raise CommandError(f"{output} is out of date: run manage.py contract_docs")
            self.stdout.write(f"{output} is up to date")
            return
        output.write_text(text)
        self.stdout.write(f"wrote {output}")
