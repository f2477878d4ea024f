// Prices a ride: 0.12 EUR per km, half price under 26. Pure: the output depends on the input only.
async function main({ distance_km, age }) {
  const base = distance_km * 0.12;
  return { price_eur: Math.round((age < 26 ? base / 2 : base) * 100) / 100 };
}
