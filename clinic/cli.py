"""Every admin task is a flask command that prints what it did."""

from __future__ import annotations

import click
from flask import Flask
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Role, Staff
from clinic.services.errors import Refused
from clinic.services.staff import create_staff


def register(app: Flask) -> None:
    @app.cli.command("create-user")
    @click.argument("email")
    @click.option("--role", type=click.Choice([r.value for r in Role]), default=Role.FRONT_DESK.value,
                  show_default=True)
    @click.password_option(help="Prompted for (twice) when not given.")
    def create_user(email: str, role: str, password: str) -> None:
        """Create a staff account that can log in."""
        try:
            staff = create_staff(email, password, role)
        except Refused as refusal:
            raise click.ClickException(refusal.message) from None
        click.echo(f"Created {staff.email} ({staff.role}).")

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
