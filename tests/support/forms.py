"""Reading a dashboard page's HTML as a browser would, for in-process tests (the standard
library's parser: no extra dependency): what a form submits, and each element's attributes
by id."""

from __future__ import annotations

from dataclasses import dataclass
from html.parser import HTMLParser


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    text: str = ""


class Page(HTMLParser):
    """The elements of a page by id, and what each form would submit as it stands."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: dict[str, Element] = {}
        self.forms: dict[str, list[tuple[str, str]]] = {}
        self._form: str | None = None
        self._open: list[Element] = []
        self._select: tuple[str, list[tuple[str, bool]]] | None = None
        self._option: tuple[str, bool] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    @classmethod
    def of(cls, html: str) -> Page:
        page = cls()
        page.feed(html)
        page.close()
        return page

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v if v is not None else "" for k, v in attrs}
        element = Element(tag, values)
        if "id" in values:
            self.by_id[values["id"]] = element
        if tag not in ("input", "br", "meta", "link", "img", "hr"):
            self._open.append(element)
        if tag == "form":
            self._form = values.get("id", "")
            self.forms[self._form] = []
        name = values.get("name")
        if self._form is None or name is None:
            if tag == "option" and self._select is not None:
                self._option = (values.get("value", ""), "selected" in values)
            return
        if tag == "input":
            kind = values.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in values:
                    self.forms[self._form].append((name, values.get("value", "on")))
            elif kind not in ("submit", "button"):
                self.forms[self._form].append((name, values.get("value", "")))
        elif tag == "select":
            self._select = (name, [])
        elif tag == "textarea":
            self._textarea = (name, [])

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1].tag == tag:
            self._open.pop()
        if tag == "option" and self._option is not None and self._select is not None:
            self._select[1].append(self._option)
            self._option = None
        elif tag == "select" and self._select is not None and self._form is not None:
            name, options = self._select
            chosen = [v for v, selected in options if selected] or [v for v, _ in options[:1]]
            self.forms[self._form].extend((name, v) for v in chosen[:1])
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, parts = self._textarea
            text = "".join(parts)
            # A browser drops the one newline that follows <textarea>.
            self.forms[self._form].append((name, text[1:] if text.startswith("\n") else text))
            self._textarea = None
        elif tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element.text += data
        if self._textarea is not None:
            self._textarea[1].append(data)

    def text_of(self, element_id: str) -> str:
        return " ".join(self.by_id[element_id].text.split())
