REVOKE INSERT (traceparent, tracestate) ON TABLE jobs FROM copydesk_tenant;
