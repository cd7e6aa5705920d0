"""The ReportResults streaming pipeline: chunk assembly, credits, batching writer."""
