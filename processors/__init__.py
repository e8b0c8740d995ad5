"""Stream processors (Faust agents) over the event topics."""
