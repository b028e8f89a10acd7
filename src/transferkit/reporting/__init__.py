"""What a run reports: metrics from label ids (`metrics`), a run's report as JSON, PNG and HTML
(`run_report`) and the table `compare` writes (`comparison`)."""
