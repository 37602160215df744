#!/usr/bin/env bash
# The AIT lab's Task 3 leave handler (README Task 3; research/lab.md §1.4), for member-leave
# and member-failed: it only logs, for every member whatever its role, to /var/log/serf.log.
echo "Member leave/join script triggered" >> /var/log/serf.log
while read -a values; do
  HOSTNAME=${values[0]}; HOSTIP=${values[1]}; HOSTROLE=${values[2]}; HOSTTAGS=${values[3]}
  echo "Member $SERF_EVENT event received from: $HOSTNAME with role $HOSTROLE" >> /var/log/serf.log
done
