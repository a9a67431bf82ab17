-- A tenant's services set the trace of the jobs they enqueue (the engine added the
-- columns in its migration 20261213000001_trace_context).
GRANT INSERT (traceparent, tracestate) ON TABLE jobs TO copydesk_tenant;
