-- Who sent each command, so that its outcome is shown to its issuer (and admins) only.
alter table command_outcomes add column actor text;
