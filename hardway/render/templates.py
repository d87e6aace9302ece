"""The Jinja2 environment over units/: strict (an undefined name is an error), newlines kept."""

from __future__ import annotations

from functools import cache

import jinja2

from ..errors import HardwayError
from .data import units_dir


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(units_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # templates do not change during a run
    )


def render_template(name: str, context: dict) -> bytes:
    try:
        return environment().get_template(name).render(context).encode("utf-8")
    except jinja2.TemplateNotFound:
        raise HardwayError(f"template units/{name} is missing") from None
    except jinja2.UndefinedError as e:
        raise HardwayError(f"template units/{name}: {e.message}") from None
    except jinja2.TemplateSyntaxError as e:
        raise HardwayError(f"template units/{e.name or name}, line {e.lineno}: {e.message}") from None
