// A sign-up form's backend in Node: each sign-up POSTed to the inmotion gateway as a CloudEvent
// in the HTTP binding's binary mode (ce-* headers, the data as the body).
//   node signup.mjs GATEWAY_URL TOKEN
const [gateway, token] = process.argv.slice(2);
const signups = [
  { user: "ada", email: "ada@example.com", phone: "+44 20 7946 0001", team: "engines" },
  { user: "grace", email: "grace@example.com", team: "compilers" },
  { user: "linus", email: "linus@example.com", phone: "+358 9 0002", team: "kernels" },
];
for (const signup of signups) {
  const answer = await fetch(`${gateway}/topics/signups/events`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${token}`,
      "ce-specversion": "1.0",
      "ce-id": `signup-${signup.user}`,
      "ce-source": "/signup-form",
      "ce-type": "user.signed_up",
      "ce-partitionkey": signup.user,
      "content-type": "application/json",
    },
    body: JSON.stringify(signup),
  });
  const body = await answer.json();
  if (answer.status !== 202) {
    console.error(`sign-up ${signup.user}: HTTP ${answer.status}: ${body.detail}`);
    process.exit(1);
  }
  const [placed] = body.events;
  console.log(`${signup.user} -> signups/${placed.partition}@${placed.offset}`);
}
