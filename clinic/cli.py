"""Every admin task is a flask command that prints what it did."""

from __future__ import annotations

from pathlib import Path

import click
from flask import Flask
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Role, Staff
from clinic.services.api_tokens import SCOPES, create_token
from clinic.services.backup import hold_while_serving
from clinic.services.erasure import ERASURE_REASONS
from clinic.services.errors import Refused
from clinic.services.patients import FieldErrors
from clinic.services.staff import create_staff
from clinic.services.transaction import Actor


def register(app: Flask) -> None:
    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.FRONT_DESK.value,
                  show_default=True)
    @click.option("--branch", "branch_name", help="The branch the person works at (see create-branch).")
    @click.password_option(help="Prompted for (twice) when not given.")
    def create_user(email: str, role: str, password: str, branch_name: str | None) -> None:
        """Create a staff account that can log in."""
        from clinic.services.branches import assign_branches, branch_by_name

        branch = branch_by_name(branch_name) if branch_name else None
        if branch_name and branch is None:
            raise click.ClickException(f"There is no branch called {branch_name}: create it with create-branch.")
        try:
            staff = create_staff(email, password, role)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        if branch is not None:
            assign_branches({staff.id: branch.id}, Actor())
        click.echo(f"Created {staff.email} ({staff.role}){f' at {branch.name}' if branch else ''}.")

    @app.cli.command("create-branch")
    @click.argument("name")
    @click.option("--address", default="", help="The branch's address.")
    def create_branch(name: str, address: str) -> None:
        """Add a branch of the clinic; staff are then assigned to it (create-user --branch, or the Branches page)."""
        from clinic.services.branches import create_branch as add_branch

        try:
            branch = add_branch(name, address, Actor())
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(f"Created branch {branch.name} (id {branch.id}).")

    @app.cli.command("check-printing")
    def check_printing() -> None:
        """Say whether WeasyPrint found fast font subsetting and a Chinese font."""
        from clinic.services.printing import printing_problems

        problems = printing_problems()
        for problem in problems:
            click.echo(f"PROBLEM: {problem}")
        if problems:
            raise SystemExit(1)
        click.echo("Printing is ready: WeasyPrint found libharfbuzz-subset and a Noto CJK font.")

    @app.cli.command("check")
    def check() -> None:
        """Is this server set up right? Database, public address, printing, two-step key, Redis, background work.

        Exits 1 when something is broken (a PROBLEM line), so that it can end an install script or a monitor.
        """
        from clinic.services.installation import PROBLEM, check_installation

        findings = check_installation(app.config)
        for finding in findings:
            click.echo(f"{finding.level.upper():8} {finding.topic:15} {finding.text}")
        if any(finding.level == PROBLEM for finding in findings):
            raise SystemExit(1)

    @app.cli.command("seed-demo")
    @click.option("--password", help="Password for the demo logins (a random one is printed if omitted).")
    @click.option("--if-empty", is_flag=True, help="Do nothing when the database already has staff (first run only).")
    def seed_demo(password: str | None, if_empty: bool) -> None:
        """Create a demo clinic with staff, ~20 patients, referrals and vouchers."""
        from clinic.services.demo import seed_demo_clinic

        if if_empty and db.session.scalar(select(func.count()).select_from(Staff)):
            click.echo("Demo data not added: this database already has staff accounts.")
            return
        try:
            summary = seed_demo_clinic(password)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        for line in summary.lines():
            click.echo(line)

    @app.cli.command("backup")
    @click.argument("dest", type=click.Path(path_type=Path))
    @click.option("--force", is_flag=True, help="Replace DEST if it already exists.")
    def backup(dest: Path, force: bool) -> None:
        """Copy the SQLite database to DEST, safely while the app runs (PostgreSQL: says how to use pg_dump)."""
        from clinic.services.backup import backup_database

        try:
            summary = backup_database(dest, overwrite=force)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(f"Backed up to {summary.describe()}.")
        click.echo("The copy passed its integrity check.")

    @app.cli.command("restore")
    @click.argument("src", type=click.Path(path_type=Path))
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def restore(src: Path, yes: bool) -> None:
        """Replace the SQLite database with the backup SRC, keeping a safety copy of the current one."""
        from clinic.services.backup import restore_database

        def confirm(backup, live) -> bool:
            click.echo(f"Backup:  {backup.describe()}")
            click.echo(f"Current: {live.describe()}")
            return yes or click.confirm("Replace the current database with the backup? Stop the app first: "
                                        "anything entered meanwhile would be lost")

        try:
            result = restore_database(src, confirm)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        if result is None:
            raise click.ClickException("Nothing was restored.")
        if result.safety_copy_problems:
            click.echo(f"The current database was already damaged ({'; '.join(result.safety_copy_problems[:3])}); "
                       "the safety copy keeps it as it was.")
        click.echo(f"Kept a safety copy of the current database: {result.safety_copy.describe()}.")
        click.echo(f"Restored {src} into {result.restored.describe()}.")
        if result.needs_upgrade:
            click.echo(f"The backup's schema is older than this version of the app ({result.head}): "
                       "run `flask --app wsgi db upgrade` before starting the app.")

    @app.cli.command("disable-user")
    @click.argument("email")
    def disable_user(email: str) -> None:
        """Disable a staff account and end its sessions on every device at once."""
        _set_enabled(email, False)

    @app.cli.command("enable-user")
    @click.argument("email")
    def enable_user(email: str) -> None:
        """Let a disabled staff account log in again."""
        _set_enabled(email, True)

    @app.cli.command("reset-two-step")
    @click.argument("email")
    def reset_two_step(email: str) -> None:
        """Turn off an account's two-step login (a lost phone) and end its sessions: the password alone logs in."""
        from clinic.services import two_step
        from clinic.services.staff import staff_by_email

        staff = staff_by_email(email)
        if staff is None:
            raise click.ClickException(f"No staff account has the email {email}.")
        try:
            two_step.reset(staff.id, Actor())
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(f"Two-step login is off for {staff.email}, logged out everywhere: the password alone logs in until "
                   "it is turned on again.")

    @app.cli.command("seal-two-step-secrets")
    def seal_two_step_secrets() -> None:
        """Seal the two-step login secrets still stored in clear (from before they were sealed) with the app's key."""
        from clinic.services import two_step

        sealed = two_step.seal_clear_secrets()
        click.echo(f"Sealed {sealed} two-step login secret(s) with this server's key; none is left in clear.")

    @app.cli.command("create-api-token")
    @click.argument("name")
    @click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(list(SCOPES)),
                  help="What the token may do; repeat it for each. "
                       + " · ".join(f"{name}: {description}" for name, description in SCOPES.items()))
    def create_api_token(name: str, scopes: tuple[str, ...]) -> None:
        """Create a token for the integration API (/api/v1); the token is printed once, as the last line."""
        try:
            token, raw = create_token(name, scopes, Actor())
        except FieldErrors as problems:
            raise click.ClickException(" ".join(problems.errors.values())) from None
        click.echo(f"Created API token {token.name!r} ({token.prefix}…) with the scopes {', '.join(token.scopes)}. "
                   "It is shown only now; send it as 'Authorization: Bearer <token>':")
        click.echo(raw)

    @app.cli.command("erase-patient")
    @click.argument("patient_id", type=click.IntRange(1, 2**31 - 1))
    @click.option("--reason", required=True, type=click.Choice(list(ERASURE_REASONS)),
                  help="Why: the patient asked, the record was a mistake, or it duplicates another.")
    @click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
    def erase_patient(patient_id: int, reason: str, yes: bool) -> None:
        """Erase a patient's personal data (name, phone, record number, consents, link); the ledger keeps the rest."""
        from clinic.services.erasure import erase_patient, erasure_plan

        plan = erasure_plan(patient_id)
        if plan is None:
            raise click.ClickException(f"No patient has the id {patient_id}.")
        click.echo(f"Patient {patient_id}, code {plan.patient.personal_code}: {len(plan.active_vouchers)} active "
                   f"vouchers stay valid; {len(plan.cards_to_void)} cards become void; {len(plan.rewards_to_cancel)} "
                   f"rewards due are cancelled.")
        if not yes and not click.confirm("Erase this patient's personal data? It cannot be undone"):
            raise click.ClickException("Nothing was erased.")
        try:
            report = erase_patient(patient_id, reason, Actor())
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(f"Erased the personal data of patient {patient_id}: {report.cards_voided} cards voided, "
                   f"{report.rewards_cancelled} rewards cancelled, {report.reviews_rejected} reviews rejected, "
                   f"{report.messages_cancelled} messages cancelled, {report.events_redacted} events redacted; "
                   f"{report.vouchers_kept} active vouchers kept.")

    @app.cli.command("erase-inactive-patients")
    @click.option("--dry-run", is_flag=True, help="Only say how many patients are due, and their ids.")
    def erase_inactive_patients(dry_run: bool) -> None:
        """Erase the personal data of patients inactive longer than the clinic's retention rule (daily, from cron)."""
        from clinic.services import retention

        if dry_run:
            months = retention.retention_months()
            if not months:
                click.echo("The retention rule is off: nothing to erase.")
                return
            ids = retention.due_patient_ids()
            click.echo(f"{len(ids)} patients are due for erasure (no activity for {months} months)"
                       + (f": {', '.join(map(str, ids))}." if ids else "."))
            return
        report = retention.erase_inactive_patients(Actor())
        click.echo(report.describe())
        if report.failed:
            raise SystemExit(1)

    @app.cli.command("worker")
    @click.option("--burst", is_flag=True, help="Stop when the queue is empty (for cron or tests).")
    def worker(burst: bool) -> None:
        """Run queued background jobs (card batches); needs REDIS_URL. Without Redis jobs run in the web process."""
        from clinic.services.jobs import run_worker

        if not app.config.get("REDIS_URL"):
            raise click.ClickException("REDIS_URL is not set: without Redis, jobs run inside the web process "
                                       "and no worker is needed.")
        click.echo(f"Working on queue {app.config['JOB_QUEUE']} at {app.config['REDIS_URL']}.")
        hold_while_serving(app)
        run_worker(app, burst=burst)

    @app.cli.command("deliver-webhooks")
    @click.option("--once", is_flag=True, help="Send what is due now, then stop (for cron or tests).")
    def deliver_webhooks(once: bool) -> None:
        """Send pending webhook deliveries and retry failed ones with backoff, until stopped."""
        import time

        from sqlalchemy.exc import OperationalError

        from clinic.services.webhook_sender import deliver_due

        hold_while_serving(app)
        if not once:
            click.echo(f"Sending webhooks every {app.config['WEBHOOK_POLL_SECONDS']:g} s (Ctrl+C stops).")
        while True:
            try:
                report = deliver_due()
            except OperationalError as problem:  # the database restarting, say: try again next round
                db.session.rollback()
                click.echo(f"Database unavailable, trying again: {problem.orig}", err=True)
            else:
                if report.attempts or once:
                    click.echo(report.describe())
                for problem in report.problems:
                    click.echo(f"  {problem}")
            if once:
                return
            time.sleep(app.config["WEBHOOK_POLL_SECONDS"])

    @app.cli.command("prune-webhooks")
    @click.option("--days", type=click.IntRange(min=1), default=90, show_default=True,
                  help="Keep this many days of webhook history.")
    def prune_webhooks(days: int) -> None:
        """Delete finished webhook deliveries (and their events) older than DAYS; pending ones stay."""
        from datetime import timedelta

        from clinic.services.webhook_pruning import prune_webhook_history

        report = prune_webhook_history(timedelta(days=days), Actor())
        click.echo(f"Deleted {report.deliveries} finished deliveries and {report.events} events older than "
                   f"{days} days.")

    @app.cli.command("prune-leads")
    @click.option("--days", type=click.IntRange(min=1), default=90, show_default=True,
                  help="Keep call-back requests this many days after the friend last asked.")
    @click.option("--dry-run", is_flag=True, help="Only say how many would be deleted.")
    def prune_leads(days: int, dry_run: bool) -> None:
        """Delete call-back requests never converted whose friend asked more than DAYS ago (daily, from cron)."""
        from clinic.services import leads

        count = leads.prune_leads(days, Actor(), dry_run=dry_run)
        if dry_run:
            click.echo(f"{count} call-back requests older than {days} days would be deleted (dry run: none was).")
        else:
            click.echo(f"Deleted {count} call-back requests older than {days} days that were never converted.")

    @app.cli.command("remind-expiring-vouchers")
    @click.option("--days", type=click.IntRange(min=1, max=365), default=7, show_default=True,
                  help="Remind of vouchers that expire within this many days.")
    def remind_expiring_vouchers(days: int) -> None:
        """Message patients who agreed to messages about their vouchers expiring within DAYS (each voucher once)."""
        from datetime import timedelta

        from clinic.services.voucher_reminders import remind_expiring_vouchers as remind

        click.echo(remind(Actor(), timedelta(days=days)).describe())

    @app.cli.command("send-invitations")
    @click.option("--enrolled-within-days", type=click.IntRange(min=1, max=3650), default=None,
                  help="Only patients enrolled within this many days.")
    @click.option("--not-within-days", type=click.IntRange(min=1, max=3650), default=90, show_default=True,
                  help="Leave out patients sent their code within this many days.")
    @click.option("--limit", type=click.IntRange(min=1, max=1000), default=1000, show_default=True,
                  help="At most this many patients per run; run again for the rest.")
    @click.option("--dry-run", is_flag=True, help="Say who would be sent their code, and send nothing.")
    def send_invitations(enrolled_within_days: int | None, not_within_days: int, limit: int, dry_run: bool) -> None:
        """Send patients who agreed to messages their referral code and invite link (each once per NOT_WITHIN_DAYS)."""
        from clinic.services.invitation_messages import Audience
        from clinic.services.invitation_messages import send_invitations as send

        audience = Audience(not_within_days=not_within_days, enrolled_within_days=enrolled_within_days)
        try:
            run = send(audience, Actor(), limit=limit, dry_run=dry_run)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(run.describe())

    @app.cli.command("prune-imports")
    def prune_imports() -> None:
        """Delete import files past their time: progress links after 15 minutes, uploads and results after a day."""
        from clinic.services.importer import sweep

        folder = app.config["IMPORT_FOLDER"]
        click.echo(f"Deleted {sweep(folder)} expired import files from {folder}.")


def _set_enabled(email: str, enabled: bool) -> None:
    from clinic.services.staff import set_enabled, staff_by_email

    staff = staff_by_email(email)
    if staff is None:
        raise click.ClickException(f"No staff account has the email {email}.")
    try:
        set_enabled(staff.id, enabled, Actor())
    except Refused as refusal:
        raise click.ClickException(refusal.message) from None
    click.echo(f"{staff.email} is {'enabled' if enabled else 'disabled and logged out everywhere'}.")
