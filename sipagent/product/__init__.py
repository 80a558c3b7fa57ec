"""The product layer: what an operator does with a phone agent, above the engines.

Who may call (:mod:`.policy`, :mod:`.numbers`), what the agent is for on each number (:mod:`.routes`),
how many calls at once (:mod:`.limits`), calls placed to do a job (:mod:`.outbound`), and the
interface the control API drives (:mod:`.control`). It talks to the SIP, RTP and conversation
engines through their events and commands only (docs: ../shared/docs/architecture.md).
"""
