"""patient-link tokens never in clear: the installation's link secret; outbox messages hold sealed
placeholders instead of the tokens of /f/ and /d/ links

Revision ID: 0017
Revises: 0012
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision = "0017"
down_revision = "0012"
branch_labels = None
depends_on = ("0010",)  # outbox_messages (flows)


def upgrade() -> None:
    op.create_table(
        "instance_secrets",
        sa.Column("name", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    # Messages written before: the token of each link in subject and body is sealed (the same
    # function new messages pass through), so a pending or resent message still opens its page.
    from careloop.engine.links import seal_links

    session = Session(bind=op.get_bind())
    messages = sa.table("outbox_messages", sa.column("id", sa.Integer),
                        sa.column("subject", sa.Text), sa.column("body", sa.Text))
    rows = session.execute(sa.select(messages.c.id, messages.c.subject, messages.c.body).where(
        sa.or_(messages.c.body.like("%/f/%"), messages.c.body.like("%/d/%"),
               messages.c.subject.like("%/f/%"), messages.c.subject.like("%/d/%")))).all()
    for message_id, subject, body in rows:
        sealed_subject, sealed_body = seal_links(session, subject), seal_links(session, body)
        if (sealed_subject, sealed_body) != (subject, body):
            session.execute(sa.update(messages).where(messages.c.id == message_id).values(
                subject=sealed_subject, body=sealed_body))
    session.flush()


def downgrade() -> None:
    # the sealed placeholders stay (opening them needs the secret: downgrading loses the links
    # of messages not yet sent)
    op.drop_table("instance_secrets")
