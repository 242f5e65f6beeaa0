"""Set up a run: inventory, targets, inputs, options, and the plan shown before anything runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Button, Checkbox, Footer, Header, Input, Label, Select, Static

from engine.core.defaults import DEFAULT_FORKS, MAX_FORKS
from engine.core.errors import CairnError
from engine.core.inputs import input_text, starting_value
from engine.core.model import PHASE_ORDER, Host, InputSpec, Phase, Runbook
from tui.config import CairnConfig
from tui.screens.fitted_footer import FittedFooterScreen
from tui.widgets.plan_view import PlanView

RESOLVE_DELAY = 0.3
"""Seconds of quiet typing before the targets are resolved again."""


def app_config(app: App[Any]) -> CairnConfig:
    """The running app's :class:`CairnConfig` (the Cairn app, or a test's app, has it as ``config``)."""
    config = getattr(app, "config", None)
    if not isinstance(config, CairnConfig):
        raise TypeError("the run screens need an app with a CairnConfig as .config")
    return config


def input_help(spec: InputSpec) -> str:
    """The line under an input's label: description, default, choices, secret."""
    from engine.core.render import reflow  # noqa: PLC0415

    parts = [reflow(spec.description)] if spec.description else []
    if spec.has_default:
        parts.append(f"default {input_text(spec, spec.default) or '(empty)'}")
    else:
        parts.append("required")
    if spec.choices:
        parts.append("one of " + ", ".join(input_text(spec, c) for c in spec.choices))
    if spec.secret:
        parts.append("secret: masked, never journaled")
    return " · ".join(parts)


class HostsResolved(Message):
    """The targets were resolved (or failed to) for the inventory and pattern typed."""

    def __init__(self, generation: int, hosts: list[Host], error: str) -> None:
        super().__init__()
        self.generation, self.hosts, self.error = generation, hosts, error


class PlanReady(Message):
    """The plan for the current targets, inputs and options."""

    def __init__(self, generation: int, text: str) -> None:
        super().__init__()
        self.generation, self.text = generation, text


class RunSetupScreen(FittedFooterScreen[None]):
    """Choose inventory, targets and inputs for a runbook, see the plan, then start the run."""

    CSS_PATH = Path(__file__).parent / "setup.tcss"  # absolute: subclasses elsewhere find it too
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]  # noqa: RUF012 - Textual declares it so
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "start", "Start run", priority=True),
        Binding("escape", "back", "Back"),
    ]

    def __init__(
        self,
        runbook: Runbook,
        *,
        inventory: tuple[str, ...] = (),
        inputs: Mapping[str, Any] | None = None,
        practice: str | None = None,
    ) -> None:
        super().__init__()
        self.runbook = runbook
        self.inventory = inventory
        self.given_inputs: dict[str, Any] = dict(inputs or {})
        self.practice = practice
        """The lab's name in practice mode (its inventory and inputs are given)."""
        self.hosts: list[Host] = []
        self.hosts_error = "resolving…"
        self._generation = 0
        self._plan_generation = 0
        self._resolve_timer: Timer | None = None

    # ------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        runbook = self.runbook
        config = app_config(self.app)
        sources = self.inventory or config.inventory
        yield Header()
        with Horizontal(id="setup-body"):
            with VerticalScroll(id="setup-form"):
                yield Label("Inventory", classes="field-label")
                yield Static(
                    "Inventory files or folders, space-separated; empty: this machine", classes="field-help"
                )
                yield Input(
                    " ".join(sources),
                    placeholder="empty: this machine (localhost)",
                    id="inventory",
                    compact=True,
                )
                yield Label("Targets", classes="field-label")
                yield Static(
                    f"An Ansible pattern within the runbook's targets ({runbook.targets})",
                    classes="field-help",
                    markup=False,
                )
                yield Input(runbook.targets, placeholder=runbook.targets, id="pattern", compact=True)
                yield Static("resolving…", id="hosts", markup=False)
                for spec in runbook.inputs:
                    yield Label(f"{spec.name} ({spec.type.value})", classes="field-label")
                    yield Static(input_help(spec), classes="field-help", markup=False)
                    yield Input(
                        input_text(spec, starting_value(spec, self.given_inputs)),
                        placeholder=input_text(spec, spec.default) if spec.has_default else "required",
                        password=spec.secret,
                        id=f"input-{spec.name}",
                        classes="run-input",
                        compact=True,
                    )
                    yield Static("", id=f"error-{spec.name}", classes="field-error", markup=False)
                with Horizontal(id="options"):
                    yield Checkbox("Dry run (remediation not run)", id="dry-run", compact=True)
                    yield Select(
                        [(f"stop after {p.value}", p.value) for p in PHASE_ORDER],
                        value=Phase.VERIFY.value,
                        allow_blank=False,
                        id="last-phase",
                        compact=True,
                    )
                yield Label("Hosts at once", classes="field-label")
                yield Static(
                    f"How many hosts are worked on in parallel (1-{MAX_FORKS})", classes="field-help"
                )
                yield Input(
                    str(DEFAULT_FORKS),
                    id="forks",
                    compact=True,
                    restrict=r"[0-9]*",
                    max_length=len(str(MAX_FORKS)),
                )
                yield Static("", id="error-forks", classes="field-error", markup=False)
                yield Button("Start run (ctrl+s)", variant="primary", id="start", compact=True)
            with VerticalScroll(id="plan-pane"):
                yield PlanView(id="plan")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        """Title, the plan pane's caption, errors of prefilled inputs, the first resolution."""
        self.title = f"Set up: {self.runbook.title}"
        self.sub_title = f"practice on lab {self.practice}" if self.practice else self.runbook.id
        self.query_one("#plan-pane").border_title = "Plan — nothing runs until you start"
        self._check_inputs()
        first_bad = next((i for i in self.query(".run-input").results(Input) if self._error_of(i)), None)
        (first_bad or self.query_one("#inventory", Input)).focus()
        self._resolve()

    # ------------------------------------------------------------ targets

    @on(Input.Changed, "#inventory, #pattern")
    def _targets_changed(self) -> None:
        self.hosts, self.hosts_error = [], "resolving…"
        self._show_hosts()
        if self._resolve_timer is not None:
            self._resolve_timer.stop()
        self._resolve_timer = self.set_timer(RESOLVE_DELAY, self._resolve)

    def _target_query(self) -> tuple[tuple[str, ...], str | None]:
        sources = tuple(self.query_one("#inventory", Input).value.split())
        pattern = self.query_one("#pattern", Input).value.strip()
        limit = pattern if pattern and pattern != self.runbook.targets else None
        return sources, limit

    def _resolve(self) -> None:
        self._generation += 1
        sources, limit = self._target_query()
        self._resolve_worker(self._generation, sources, limit)

    @work(thread=True, exclusive=True, exit_on_error=False, group="resolve")
    def _resolve_worker(self, generation: int, sources: tuple[str, ...], limit: str | None) -> None:
        from engine.core.inventory import resolve_targets  # noqa: PLC0415

        try:  # one resolution at a time: the engine's own lock around ansible-core's inventory code
            hosts = resolve_targets(sources, self.runbook.targets, limit)
        except CairnError as exc:
            self.post_message(HostsResolved(generation, [], str(exc)))
            return
        self.post_message(HostsResolved(generation, hosts, ""))

    def on_hosts_resolved(self, message: HostsResolved) -> None:
        """Show the hosts (or why there are none), then the plan for them."""
        if message.generation != self._generation:
            return  # typed on since: a newer resolution is coming
        self.hosts, self.hosts_error = message.hosts, message.error
        self._show_hosts()
        self._replan()

    def _show_hosts(self) -> None:
        hosts = self.query_one("#hosts", Static)
        hosts.set_class(bool(self.hosts_error) and self.hosts_error != "resolving…", "-error")
        if self.hosts_error:
            hosts.update(self.hosts_error)
            return
        shown = ", ".join(f"{h.name} ({h.connection})" for h in self.hosts[:12])
        more = f", … +{len(self.hosts) - 12} more" if len(self.hosts) > 12 else ""
        noun = "host" if len(self.hosts) == 1 else "hosts"
        hosts.update(f"{len(self.hosts)} {noun}: {shown}{more}")

    # ------------------------------------------------------------ inputs

    @on(Input.Changed, ".run-input")
    def _input_changed(self) -> None:
        self._check_inputs()
        self._replan()

    def _error_of(self, field: Input) -> str:
        spec = self.runbook.input((field.id or "").removeprefix("input-"))
        return self._convert(spec, field.value)[1] if spec is not None else ""

    def _convert(self, spec: InputSpec, text: str) -> tuple[Any, str]:
        """The typed value of ``text`` for ``spec`` and the error ("" if none), by the engine's rules."""
        from engine.core.inputs import entered_value  # noqa: PLC0415

        try:
            return entered_value(spec, text), ""
        except CairnError as exc:
            return None, str(exc)

    @property
    def forks(self) -> int | None:
        """Hosts at once, or ``None`` when the field is not a number from 1 to ``MAX_FORKS``."""
        text = self.query_one("#forks", Input).value
        return int(text) if text.isdigit() and 1 <= int(text) <= MAX_FORKS else None

    @on(Input.Changed, "#forks")
    def _forks_changed(self) -> None:
        self._check_inputs()

    def _check_inputs(self) -> dict[str, str]:
        """Show each field's error under it; the errors by input name."""
        errors: dict[str, str] = {}
        forks_error = self.query_one("#error-forks", Static)
        if self.forks is None:
            errors["forks"] = f"hosts at once must be a whole number from 1 to {MAX_FORKS}"
        forks_error.update(errors.get("forks", ""))
        forks_error.display = "forks" in errors
        for spec in self.runbook.inputs:
            _, error = self._convert(spec, self.query_one(f"#input-{spec.name}", Input).value)
            shown = self.query_one(f"#error-{spec.name}", Static)
            shown.update(error)
            shown.display = bool(error)
            if error:
                errors[spec.name] = error
        return errors

    def input_values(self) -> dict[str, Any]:
        """The typed value of every input (only meaningful when :meth:`_check_inputs` found no error)."""
        return {
            spec.name: self._convert(spec, self.query_one(f"#input-{spec.name}", Input).value)[0]
            for spec in self.runbook.inputs
        }

    # ------------------------------------------------------------ plan

    @on(Checkbox.Changed, "#dry-run")
    @on(Select.Changed, "#last-phase")
    def _options_changed(self) -> None:
        self._replan()

    @property
    def last_phase(self) -> Phase:
        """The phase the run stops after."""
        value = self.query_one("#last-phase", Select).value
        return Phase(value) if isinstance(value, str) else Phase.VERIFY

    def _replan(self) -> None:
        self._plan_generation += 1
        plan = self.query_one("#plan", PlanView)
        if self.hosts_error:
            plan.show("The plan appears when the targets resolve.")
            return
        errors = self._check_inputs()
        if errors:
            plan.show("Fix the inputs to see the plan:\n" + "\n".join(f"  {e}" for e in errors.values()))
            return
        self._plan_worker(self._plan_generation, list(self.hosts), self.input_values(), self.last_phase)

    @work(thread=True, exclusive=True, exit_on_error=False, group="plan")
    def _plan_worker(self, generation: int, hosts: list[Host], values: dict[str, Any], last: Phase) -> None:
        from engine.core.plan import plan_run  # noqa: PLC0415
        from engine.core.reports import plan_text  # noqa: PLC0415

        try:
            text = plan_text(self.runbook, plan_run(self.runbook, hosts, values, last_phase=last))
        except CairnError as exc:
            text = f"The plan cannot be made: {exc}"
        self.post_message(PlanReady(generation, text))

    def on_plan_ready(self, message: PlanReady) -> None:
        """Show the plan if nothing changed since it was asked for."""
        if message.generation == self._plan_generation:
            self.query_one("#plan", PlanView).show(message.text)

    # ------------------------------------------------------------ start

    @on(Button.Pressed, "#start")
    def _start_pressed(self) -> None:
        self.action_start()

    def action_start(self) -> None:
        """Start the run (stepping) if the targets and inputs are good."""
        from engine.core.spec import RunSpec, Trigger, TriggerKind  # noqa: PLC0415
        from tui.screens.run import RunScreen  # noqa: PLC0415

        if self.hosts_error:
            self.notify(f"No targets yet: {self.hosts_error}", severity="error")
            return
        errors = self._check_inputs()
        if errors:
            self.notify("Fix the inputs first: " + "; ".join(errors.values()), severity="error")
            return
        sources, limit = self._target_query()
        config = app_config(self.app)
        spec = RunSpec(
            runbook=self.runbook,
            hosts=tuple(self.hosts),
            inputs=self.input_values(),
            trigger=Trigger(kind=TriggerKind.TUI, limit=limit),
            options=replace(config.options, inventory_sources=tuple(sources)),
            last_phase=self.last_phase,
            forks=self.forks or DEFAULT_FORKS,
            dry_run=self.query_one("#dry-run", Checkbox).value,
        )
        self.app.switch_screen(RunScreen(spec, config, practice=self.practice))

    def action_back(self) -> None:
        """Back to where the run was chosen."""
        self.app.pop_screen()
