"""Make the tenant foreign keys Django created checked per statement, not at commit.

Django declares foreign keys DEFERRABLE INITIALLY DEFERRED; on the final and pending
tables that queues one check per loaded row in the server's memory until commit. Checked
at once, the queue never grows with the file.
"""

from django.db import migrations

SQL = """
DO $$
DECLARE c record;
BEGIN
  FOR c IN
    SELECT con.conname, rel.relname
    FROM pg_constraint con
    JOIN pg_class rel ON rel.oid = con.conrelid
    WHERE con.contype = 'f' AND con.condeferrable
      AND con.confrelid = 'tenants'::regclass
      AND rel.relname IN ('customers', 'products', 'pending_orders', 'pending_order_items')
  LOOP
    EXECUTE format('ALTER TABLE %I ALTER CONSTRAINT %I NOT DEFERRABLE', c.relname, c.conname);
  END LOOP;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("ingestions", "0003_blobs_idempotency")]

    operations = [migrations.RunSQL(SQL, migrations.RunSQL.noop)]
