"""Runbooks tested and incidents replayed: a run's logic against recorded answers, never a host.

- :mod:`~engine.core.replay.case`: test cases (``ID.tests/NAME.yaml`` beside a runbook), read and checked;
- :mod:`~engine.core.replay.executor`: the replay executor and approver, answering from a recording;
- :mod:`~engine.core.replay.play`: a case run through the real runner;
- :mod:`~engine.core.replay.compare`: expected against got (a diff), a recording against a replay (changes);
- :mod:`~engine.core.replay.record`: a journaled run turned into a case;
- :mod:`~engine.core.replay.suite`: ``cairn test``'s loop.
"""
