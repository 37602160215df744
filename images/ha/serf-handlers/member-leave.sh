#!/usr/bin/env bash
# The AIT lab's Task 5 leave handler (README Task 5; research/lab.md §3.4), kept as the lab
# wrote it: "member-leave,member-failed=/serf-handlers/member-leave.sh". It removes the
# backend's /nodes/<name> and logs to /var/log/serf.log (see member-join.sh for the end).
echo "Member leave/join script triggered" >> /var/log/serf.log
BACKEND_UNREGISTERED=false
while read -a values; do
  HOSTNAME=${values[0]}; HOSTIP=${values[1]}; HOSTROLE=${values[2]}; HOSTTAGS=${values[3]}
  if [[ "$HOSTROLE" == "backend" ]]; then
    echo "Member $SERF_EVENT event received from: $HOSTNAME with role $HOSTROLE" >> /var/log/serf.log
    rm /nodes/$HOSTNAME
    BACKEND_UNREGISTERED=true
  fi
done
if [[ "$BACKEND_UNREGISTERED" = true ]]; then
  HOSTS=""
  for hostfile in $(ls /nodes); do
    CURRENT_HOST=`cat /nodes/$hostfile | awk '{ print "{\"host\":\"" $1 "\",\"ip\":\"" $2 "\"}" }'`
    HOSTS="$HOSTS$CURRENT_HOST,"
  done
  handlebars --addresses "[$(echo $HOSTS | sed s/,$//)]" < /config/haproxy.cfg.hb > /usr/local/etc/haproxy/haproxy.cfg
  # Send a SIGHUP to the process. It will restart HAProxy
  s6-svc -h /var/run/s6/services/ha
fi
