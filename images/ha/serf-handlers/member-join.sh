#!/usr/bin/env bash
# The AIT lab's Task 5 join handler (README Task 5; research/lab.md §3.4), kept as the lab
# wrote it. Two images run it: the lab's own stack (images/baseline/ha, under a real serf
# agent, where its handlebars render and s6 reload restart HAProxy) and muster's ha image,
# unchanged under muster (`[gossip] event_handlers` with
# "member-join=/serf-handlers/member-join.sh", images/ha/lab-handlers.toml). It records each
# backend in /nodes/<name> and logs to /var/log/serf.log. Under muster the render and the
# reload have no place (muster keeps HAProxy's servers itself): their failures only reach
# muster's log.
echo "Member join script triggered" >> /var/log/serf.log
BACKEND_REGISTERED=false
while read -a values; do
  HOSTNAME=${values[0]}; HOSTIP=${values[1]}; HOSTROLE=${values[2]}; HOSTTAGS=${values[3]}
  if [[ "$HOSTROLE" == "backend" ]]; then
    echo "Member join event received from: $HOSTNAME with role $HOSTROLE" >> /var/log/serf.log
    echo "$HOSTNAME $HOSTIP" > /nodes/$HOSTNAME
    BACKEND_REGISTERED=true
  fi
done
if [[ "$BACKEND_REGISTERED" = true ]]; then
  HOSTS=""
  for hostfile in $(ls /nodes); do
    CURRENT_HOST=`cat /nodes/$hostfile | awk '{ print "{\"host\":\"" $1 "\",\"ip\":\"" $2 "\"}" }'`
    HOSTS="$HOSTS$CURRENT_HOST,"
  done
  handlebars --addresses "[$(echo $HOSTS | sed s/,$//)]" < /config/haproxy.cfg.hb > /usr/local/etc/haproxy/haproxy.cfg
  # Send a SIGHUP to the process. It will restart HAProxy
  s6-svc -h /var/run/s6/services/ha
fi
