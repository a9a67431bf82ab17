DROP TABLE job_steps;
