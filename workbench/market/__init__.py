"""Market data as pure data: quotes, calendars, schedules and the market snapshot."""
