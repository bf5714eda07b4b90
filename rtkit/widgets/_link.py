"""Binding a widget's value to a key of a shared document; see :func:`link`."""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol

import pycrdt
import traitlets

log = logging.getLogger(__name__)

_MISSING = object()


class _Shared(Protocol):
    """What :func:`link` needs of a shared document: the blocking
    :class:`rtkit.SharedDoc` and the async :class:`rtkit.aio.SharedDoc` both fit."""

    def __getitem__(self, key: str) -> Any: ...
    def __setitem__(self, key: str, value: Any) -> None: ...
    def __contains__(self, key: object) -> bool: ...
    def observe(self, callback: Any) -> Any: ...
    def unobserve(self, callback: Any) -> None: ...


def _to_shared(value: Any) -> Any:
    """A trait value as the document stores it (tuples as lists)."""
    if isinstance(value, tuple):
        return [_to_shared(v) for v in value]
    if isinstance(value, list):
        return [_to_shared(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_shared(v) for k, v in value.items()}
    return value


def _to_trait(value: Any, current: Any) -> Any:
    """A document value for a trait holding ``current``.

    The document keeps numbers as floats (Yjs numbers); an integer trait such
    as an IntSlider's value gets its integer back.
    """
    if isinstance(value, pycrdt.Map | pycrdt.Array | pycrdt.Text):
        value = value.to_py()
    if isinstance(current, tuple) and isinstance(value, list):
        hints = current + (None,) * (len(value) - len(current))
        return tuple(_to_trait(v, c) for v, c in zip(value, hints, strict=False))
    if (
        isinstance(current, int)
        and not isinstance(current, bool)
        and isinstance(value, float)
        and value.is_integer()
    ):
        return int(value)
    return value


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(_to_shared(a) == _to_shared(b))
    except Exception:  # values that cannot be compared: treat as changed
        return False


class Link:
    """A live binding made by :func:`link`; ``unlink()`` ends it.

    >>> binding = link(slider, params, "alpha")
    >>> binding.unlink()  # the slider and the key keep their values
    """

    def __init__(self, widget: traitlets.HasTraits, doc: _Shared, key: str, name: str) -> None:
        if not isinstance(widget, traitlets.HasTraits) or not widget.has_trait(name):
            raise TypeError(f"link: {widget!r} has no trait {name!r} to bind")
        if not isinstance(key, str) or not key:
            raise TypeError("link: the key must be a non-empty string")
        self.widget = widget
        self.doc = doc
        self.key = key
        self.name = name
        # Held while copying one way, so that the copy does not bounce back.
        self._copying = threading.local()
        self._linked = True
        # Listen first: a remote change landing between the first read or
        # write below and a later observe() would never reach the widget.
        doc.observe(self._on_doc)
        try:
            if key in doc:
                self._from_doc()
            else:
                self._write(getattr(widget, name))
        except BaseException:
            doc.unobserve(self._on_doc)
            raise
        widget.observe(self._on_widget, names=name)

    def __repr__(self) -> str:
        state = "linked" if self._linked else "unlinked"
        bound = f"{type(self.widget).__name__}.{self.name}"
        return f"<rtkit.widgets.Link {bound} <-> {self.key!r} {state}>"

    def unlink(self) -> None:
        """Stop the binding both ways (the widget and the document keep their values)."""
        if not self._linked:
            return
        self._linked = False
        self.widget.unobserve(self._on_widget, names=self.name)
        self.doc.unobserve(self._on_doc)

    def _on_widget(self, change: dict[str, Any]) -> None:
        if getattr(self._copying, "active", False) or not self._linked:
            return
        value = change["new"]
        try:
            current = self.doc[self.key]
        except KeyError:
            current = _MISSING
        if current is _MISSING or not _same(_to_trait(current, value), value):
            self._write(value)

    def _write(self, value: Any) -> None:
        try:
            self.doc[self.key] = _to_shared(value)
        except TypeError as exc:  # pycrdt: "Type not supported"
            raise TypeError(
                f"link: {type(self.widget).__name__}.{self.name} is a {type(value).__name__}, "
                f"which shared key {self.key!r} cannot hold: use numbers, strings, booleans, "
                "None, bytes, or lists and dicts of them"
            ) from exc

    def _on_doc(self, change: Any) -> None:
        # Runs where the client delivers remote changes (its I/O thread for
        # the blocking client): a widget update from there is a comm message,
        # which the kernel sends from any thread, also while a cell runs.
        if self.key in change.keys and self._linked:
            self._from_doc()

    def _from_doc(self) -> None:
        try:
            value = self.doc[self.key]
        except KeyError:
            return  # deleted: the widget keeps its last value
        current = getattr(self.widget, self.name)
        value = _to_trait(value, current)
        if _same(value, current):
            return
        self._copying.active = True
        try:
            setattr(self.widget, self.name, value)
        except traitlets.TraitError as exc:
            log.warning(
                "rtkit: shared key %r holds %r, which %s.%s does not accept: %s",
                self.key,
                value,
                type(self.widget).__name__,
                self.name,
                exc,
            )
        finally:
            self._copying.active = False


def link(widget: traitlets.HasTraits, doc: _Shared, key: str, *, name: str = "value") -> Link:
    """Bind ``widget.<name>`` to ``doc[key]`` both ways, for everyone on the document.

    Moving the widget writes the key; a change of the key, by anyone,
    moves the widget. When the key exists already the widget takes its
    value, else the widget's value is written. Works with any ipywidget
    (slider, dropdown, text, checkbox...) or other traitlets object;
    ``name`` picks another trait than ``value``.

    >>> params = hub.shared("params")
    >>> slider = ipywidgets.FloatSlider(description="alpha")
    >>> rtkit.widgets.link(slider, params, "alpha")
    """
    return Link(widget, doc, key, name)
