"""lead-sla: the marketing-sales SLA on leads, measured."""

__version__ = "0.1.0"
