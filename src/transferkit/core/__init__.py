"""Project-wide plumbing with no model code: the one atomic writer (`fs`), the run-directory lock
(`lock`) and the one reader of run and model folders that turns library errors into one-line
messages (`folders`)."""
