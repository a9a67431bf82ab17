DROP TABLE copydesk_workers;
