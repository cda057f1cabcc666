"""Demo: people scan the touchpoints' QR codes over the demo's months and answer (the
``touchpoints`` demo seeder).

Each answer goes through the touchpoint page's handler
(:func:`careloop.forms.touchpoint_page.post_touchpoint`, what ``POST /t/{token}`` calls) with its
own synthetic phone as the device, so the per-device limits, the anonymous submission, the
low-score rule (≤ 2 stars → a task for the place's owner) and the touchpoint dashboard see what
they would in production. Most people are satisfied; the pharmacy window and the cashier have
their bad days (long waits), which is what the dashboard is for. Everything is synthetic.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

#: answers per place over the demo's months (drawn around this)
PER_PLACE = 14
#: places where waits are longer: lower stars more often
BUSY = {"outpatient_pharmacy": 0.35, "cashier": 0.3, "registration_window": 0.2}
COMMENTS_GOOD = ("工作人员很耐心。", "流程清楚，很快就办好了。", "")
COMMENTS_BAD = ("排队太久，窗口只开了一个。", "取药等了四十分钟，没人解释。",
                "工作人员态度不耐烦。")
Fields = dict[str, list[str]]


def _fields(rng: random.Random, grumpy: float) -> Fields:
    stars = rng.choice((1, 2, 2, 3)) if rng.random() < grumpy else rng.choice((4, 5, 5))
    fields: Fields = {"rating": [str(stars)]}
    if stars <= 3:
        fields["issues"] = rng.sample(["waiting", "attitude", "explanation", "environment"],
                                      k=rng.randint(1, 2))
        fields["comment"] = [rng.choice(COMMENTS_BAD)]
        if stars <= 2 and rng.random() < 0.5:
            fields["callback_phone"] = [f"139{rng.randint(10_000_000, 99_999_999)}"]
    else:
        fields["comment"] = [rng.choice(COMMENTS_GOOD)]
    return {k: v for k, v in fields.items() if v != [""]}


def _scan(key: str, fields: Fields, device: str) -> Any:
    def act(session: Session) -> None:
        from careloop.forms.touchpoint_page import post_touchpoint
        from careloop.forms.touchpoints import token_for, url_for

        token = token_for(session, key)
        reply = post_touchpoint(session, token, {**fields, "_lang": ["zh-CN"]}, device=device,
                                address="10.20.0.1", url=url_for(session, key))
        if reply.status != 200:
            raise RuntimeError(f"touchpoint {key}: answer refused ({reply.status})")
    return act


def seed_touchpoints(session: Session, rng: random.Random, context: dict[str, Any]) -> None:
    """Plan the scans of every shipped touchpoint across the demo's months (with an RNG of its
    own, so the other seeders draw what they drew without touchpoints)."""
    from careloop.forms.touchpoints import all_touchpoints
    from careloop.web.demo import timeline

    places = all_touchpoints(session)
    if not places:
        context.setdefault("skipped", []).append("touchpoints: bundle not imported")
        return
    line = timeline(context)
    rng = random.Random(f"touchpoints:{rng.getstate()[1][0]}:{context.get('patient_count')}")
    start: datetime = line.start
    span = max((line.now - start).total_seconds(), 3600.0)
    for place in places:
        grumpy = BUSY.get(place.key, 0.1)
        for n in range(rng.randint(PER_PLACE - 4, PER_PLACE + 4)):
            at = start + timedelta(seconds=rng.uniform(0, span))
            at = at.replace(hour=rng.randint(0, 8), minute=rng.randint(0, 59))  # 08–17 local
            device = f"demo-{place.key}-{n}"
            line.at(at, f"touchpoint {place.key}", _scan(place.key, _fields(rng, grumpy), device))
