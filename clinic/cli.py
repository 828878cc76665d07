"""Every admin task is a flask command that prints what it did."""

from __future__ import annotations

import click
from flask import Flask
from sqlalchemy import func, select

from clinic.extensions import db
from clinic.models import Role, Staff
from clinic.services.errors import Refused
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
