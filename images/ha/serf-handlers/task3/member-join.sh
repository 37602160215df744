#!/usr/bin/env bash
# The AIT lab's Task 3 join handler (README Task 3; research/lab.md §1.4): it only logs, for
# every member whatever its role, to /var/log/serf.log. Run unchanged under muster by
# tests/lab_handlers.rs (`[gossip] event_handlers` with
# "member-join=/serf-handlers/task3/member-join.sh") beside a real serf agent.
echo "Member join script triggered" >> /var/log/serf.log
while read -a values; do
  HOSTNAME=${values[0]}; HOSTIP=${values[1]}; HOSTROLE=${values[2]}; HOSTTAGS=${values[3]}
  echo "Member join event received from: $HOSTNAME with role $HOSTROLE" >> /var/log/serf.log
done
